//! Files that leave a pod (artifacts, stashes) and what a pipeline can pull into the valet
//! process (`sh(returnStdout: true)`, `readFile`, stashes): on the local backend, with the
//! real host `tar` of the pod side and valet's own unpacking on the other.

mod common;

use std::path::Path;
use std::time::Duration;

use valet_runtime::{BuildResult, Limits, RunOptions};

fn opts(limits: Limits, artifacts: Option<&Path>) -> RunOptions {
    RunOptions {
        kill_grace: Duration::from_millis(500),
        artifacts_dir: artifacts.map(Path::to_path_buf),
        limits,
        ..RunOptions::default()
    }
}

fn error(r: &common::Run) -> String {
    r.outcome.error.clone().unwrap_or_default()
}

/// The review's attack: an artifact that is a symbolic link to a host directory, then a
/// file under a directory of the same name. The host's `tar -xf` followed the first
/// archive's link and wrote the second file into the host directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archived_symbolic_link_is_never_followed_on_the_host() {
    let target = tempfile::tempdir().expect("target");
    let artifacts = tempfile::tempdir().expect("artifacts");
    let pipeline = format!(
        r#"
node {{
    sh 'rm -rf d; ln -s {target} d'
    archiveArtifacts 'd'
    sh 'rm d; mkdir d; echo x > d/pwned.txt'
    archiveArtifacts 'd/pwned.txt'
}}
"#,
        target = target.path().display()
    );
    let r = common::run_with(&pipeline, opts(Limits::default(), Some(artifacts.path()))).await;
    assert!(
        !target.path().join("pwned.txt").exists(),
        "the second archive was written through the first one's link"
    );
    assert_eq!(r.outcome.result, BuildResult::Success, "{}", r.output());
    let kept = artifacts.path().join("d");
    assert!(
        std::fs::symlink_metadata(&kept)
            .expect("d")
            .file_type()
            .is_dir()
    );
    assert_eq!(
        std::fs::read_to_string(kept.join("pwned.txt")).expect("pwned.txt"),
        "x\n"
    );
    let out = r.output();
    assert!(
        out.contains("WARNING: archiveArtifacts: d is left out: a symbolic link"),
        "{out}"
    );
}

/// A link the pipeline put in the destination of `unstash` on the host is refused, not
/// followed: the stash's files never land outside the workspace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unstash_on_the_host_never_writes_through_a_link() {
    let target = tempfile::tempdir().expect("target");
    let pipeline = format!(
        r#"
node {{
    dir('src') {{
        sh 'mkdir -p d && echo x > d/pwned.txt'
        stash name: 's', includes: 'd/**'
    }}
    dir('dst') {{
        sh 'ln -s {target} d'
        unstash 's'
    }}
}}
"#,
        target = target.path().display()
    );
    let r = common::run_with(&pipeline, opts(Limits::default(), None)).await;
    assert!(
        !target.path().join("pwned.txt").exists(),
        "unstash wrote through the link"
    );
    assert_eq!(r.outcome.result, BuildResult::Failure, "{}", r.output());
    let e = error(&r);
    assert!(e.contains("unstash ‘s’"), "{e}");
    assert!(
        e.contains("`d` is a symbolic link or a file, not a directory"),
        "{e}"
    );
}

/// Many files (more than one group of names for `tar`), odd names, nested directories:
/// stash, unstash elsewhere and archive give them all back, with their content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stash_unstash_and_archive_keep_every_file() {
    let artifacts = tempfile::tempdir().expect("artifacts");
    let pipeline = r#"
node {
    dir('src') {
        sh '''
            mkdir -p many 'with space' ./-dash nested/deeper
            i=0; while [ $i -lt 1500 ]; do echo "$i" > many/f$i.txt; i=$((i+1)); done
            echo spaced > 'with space/a b.txt'
            echo dashed > ./-dash/-n
            echo deep > nested/deeper/file.txt
            printf '#!/bin/sh\necho run\n' > nested/run.sh && chmod 755 nested/run.sh
        '''
        stash name: 'all', includes: '**'
        archiveArtifacts '**'
    }
    dir('dst') {
        unstash 'all'
        sh '''
            test "$(ls many | wc -l)" -eq 1500
            test "$(cat many/f1499.txt)" = 1499
            test "$(cat 'with space/a b.txt')" = spaced
            test "$(cat ./-dash/-n)" = dashed
            test "$(cat nested/deeper/file.txt)" = deep
            test -x nested/run.sh
        '''
    }
}
"#;
    let r = common::run_with(pipeline, opts(Limits::default(), Some(artifacts.path()))).await;
    assert_eq!(r.outcome.result, BuildResult::Success, "{}", r.output());
    let a = artifacts.path();
    assert_eq!(
        std::fs::read_dir(a.join("many")).expect("many").count(),
        1500
    );
    assert_eq!(
        std::fs::read_to_string(a.join("with space/a b.txt")).expect("spaced"),
        "spaced\n"
    );
    assert_eq!(
        std::fs::read_to_string(a.join("-dash/-n")).expect("dashed"),
        "dashed\n"
    );
    assert!(
        r.output().contains("Archived 1504 artifact(s)"),
        "{}",
        r.output()
    );
}

/// The default limit of what one step reads into a value, 16 MiB, through the real path:
/// 17 MiB of `returnStdout` fail the step with the limit and the count, and the build
/// goes on to its `post`-like `finally`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn return_stdout_past_the_default_limit_fails_the_step_with_the_limit() {
    let r = common::run(
        r#"
node {
    try {
        def out = sh(returnStdout: true, script: 'head -c 17825792 /dev/zero')
        echo "length: ${out.length()}"
    } finally {
        echo 'still running'
    }
}
"#,
    )
    .await;
    assert_eq!(r.outcome.result, BuildResult::Failure, "{}", r.output());
    let e = error(&r);
    assert!(
        e.starts_with(
            "sh: the output of returnStdout is over the limit of 16 MiB (16777216 bytes): "
        ),
        "{e}"
    );
    assert!(
        e.ends_with("bytes were read before the step was stopped"),
        "{e}"
    );
    let seen: u64 = e
        .rsplit(": ")
        .next()
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {e}"));
    assert!(seen > 16 * 1024 * 1024, "{e}");
    assert!(r.output().contains("still running"), "{}", r.output());
    assert!(!r.output().contains("length: "), "{}", r.output());
}

/// Just below the limit still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn return_stdout_up_to_the_limit_is_returned() {
    let limits = Limits {
        read: 4096,
        ..Limits::default()
    };
    let r = common::run_with(
        r#"node { echo "got ${sh(returnStdout: true, script: 'head -c 4096 /dev/zero | tr "\\0" a').length()}" }"#,
        opts(limits, None),
    )
    .await;
    assert_eq!(r.outcome.result, BuildResult::Success, "{}", r.output());
    assert!(r.output().contains("got 4096"), "{}", r.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_file_past_the_limit_names_the_step_the_file_and_the_limit() {
    let limits = Limits {
        read: 1024,
        ..Limits::default()
    };
    let r = common::run_with(
        "node { sh 'head -c 5000 /dev/zero > big.bin'; readFile 'big.bin' }",
        opts(limits, None),
    )
    .await;
    assert_eq!(r.outcome.result, BuildResult::Failure, "{}", r.output());
    let e = error(&r);
    assert!(
        e.starts_with("readFile: big.bin is over the limit of 1 KiB (1024 bytes): "),
        "{e}"
    );
    // `readJSON` reads through the same path.
    let r = common::run_with(
        "node { sh 'head -c 5000 /dev/zero > big.json'; readJSON file: 'big.json' }",
        opts(limits, None),
    )
    .await;
    assert!(
        error(&r).starts_with("readJSON: big.json is over the limit of 1 KiB"),
        "{}",
        error(&r)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stash_past_its_limit_fails_and_keeps_nothing() {
    let limits = Limits {
        stash: 64 * 1024,
        ..Limits::default()
    };
    let r = common::run_with(
        r#"
node {
    sh 'head -c 200000 /dev/zero > big.bin'
    try {
        stash name: 'big', includes: 'big.bin'
    } finally {
        try { unstash 'big' } catch (e) { echo "after: ${e.message}" }
    }
}
"#,
        opts(limits, None),
    )
    .await;
    assert_eq!(r.outcome.result, BuildResult::Failure, "{}", r.output());
    let e = error(&r);
    assert!(
        e.starts_with("stash ‘big’ is over the limit of 64 KiB (65536 bytes) for one stash: "),
        "{e}"
    );
    assert!(
        r.output().contains("after: No such saved stash ‘big’"),
        "{}",
        r.output()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stashes_of_a_build_share_a_limit_and_a_replaced_one_frees_its_share() {
    let limits = Limits {
        stash: 64 * 1024,
        stashes: 100 * 1024,
        ..Limits::default()
    };
    // Each stash is about 41 KiB (a 40 000-byte file and its header).
    let r = common::run_with(
        r#"
node {
    sh 'head -c 40000 /dev/zero > a.bin'
    stash name: 'one', includes: 'a.bin'
    stash name: 'one', includes: 'a.bin'
    stash name: 'two', includes: 'a.bin'
    echo 'two fit'
    stash name: 'three', includes: 'a.bin'
}
"#,
        opts(limits, None),
    )
    .await;
    assert_eq!(r.outcome.result, BuildResult::Failure, "{}", r.output());
    assert!(r.output().contains("two fit"), "{}", r.output());
    let e = error(&r);
    assert!(
        e.starts_with(
            "stash ‘three’ is over the limit of 100 KiB (102400 bytes) for all the stashes of a build"
        ),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_past_its_limit_fails_and_writes_nothing() {
    let artifacts = tempfile::tempdir().expect("artifacts");
    let limits = Limits {
        archive: 64 * 1024,
        ..Limits::default()
    };
    let r = common::run_with(
        "node { sh 'head -c 200000 /dev/zero > big.bin'; archiveArtifacts 'big.bin' }",
        opts(limits, Some(artifacts.path())),
    )
    .await;
    assert_eq!(r.outcome.result, BuildResult::Failure, "{}", r.output());
    let e = error(&r);
    assert!(
        e.starts_with("archiveArtifacts: the artifacts are over the limit of 64 KiB"),
        "{e}"
    );
    assert!(!artifacts.path().join("big.bin").exists());
}

/// `checkout scm` goes through a spool file and into the pod in pieces: a repository
/// larger than a piece (2 MiB) arrives whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_scm_of_a_repository_larger_than_a_piece_arrives_whole() {
    let repo = tempfile::tempdir().expect("repo");
    let big: Vec<u8> = (0..5 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(repo.path().join("big.bin"), &big).expect("big");
    std::fs::write(repo.path().join("small.txt"), "small\n").expect("small");
    let git = |args: &[&str]| {
        let st = std::process::Command::new("git")
            .arg("-C")
            .arg(repo.path())
            .args([
                "-c",
                "user.name=valet",
                "-c",
                "user.email=valet@example.invalid",
            ])
            .args(args)
            .output()
            .expect("git");
        assert!(st.status.success(), "git {args:?}");
    };
    git(&["init", "--quiet"]);
    git(&["add", "."]);
    git(&["commit", "--quiet", "-m", "files"]);
    let options = RunOptions {
        scm: Some(valet_runtime::ScmInfo {
            dir: repo.path().to_path_buf(),
            commit: None,
            branch: None,
        }),
        ..opts(Limits::default(), None)
    };
    let pipeline = format!(
        "node {{ dir('co') {{ checkout scm; sh 'cmp big.bin {}/big.bin && test \"$(cat small.txt)\" = small' }} }}",
        repo.path().display()
    );
    let r = common::run_with(&pipeline, options).await;
    assert_eq!(r.outcome.result, BuildResult::Success, "{}", r.output());
}
