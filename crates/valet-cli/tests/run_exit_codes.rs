//! `valet run`'s exit status is the build's result; the built binary is run as a user would.

use std::process::Command;

fn valet_run(pipeline: &str, extra: &[&str]) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("Jenkinsfile");
    std::fs::write(&file, pipeline).expect("write pipeline");
    let out = Command::new(env!("CARGO_BIN_EXE_valet"))
        .arg("run")
        .arg(&file)
        .args(extra)
        .current_dir(dir.path())
        .output()
        .expect("run valet");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn success_is_0() {
    let (code, out, err) = valet_run("node { stage('Hi') { sh 'echo hello' } }", &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("hello"), "{out}");
    assert!(out.contains("── stage Hi"), "{out}");
    assert!(out.contains("Build SUCCESS"), "{out}");
}

#[test]
fn failure_is_1() {
    let (code, out, err) = valet_run("node { sh 'exit 7' }", &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("ERROR: script returned exit code 7"), "{out}");
}

#[test]
fn unstable_is_2() {
    let (code, out, err) = valet_run("node { unstable 'flaky' }", &[]);
    assert_eq!(code, 2, "{out}{err}");
}

#[test]
fn aborted_is_3() {
    let (code, out, err) = valet_run(
        "node { timeout(time: 200, unit: 'MILLISECONDS') { sh 'sleep 30' } }",
        &[],
    );
    assert_eq!(code, 3, "{out}{err}");
}

#[test]
fn invalid_pipeline_is_4_and_not_run() {
    let (code, out, err) = valet_run("node { sh 'echo ran' \n", &[]);
    assert_eq!(code, 4, "{out}{err}");
    assert!(!out.contains("ran"), "{out}");
    assert!(err.contains("not run"), "{err}");
}

#[test]
fn params_env_and_json_output() {
    let (code, out, err) = valet_run(
        "node { echo \"p=${params.WHO} e=${env.COLOUR}\" }",
        &["-p", "WHO=you", "--env", "COLOUR=blue", "--output", "json"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let events: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(
        events.first().and_then(|e| e["event"].as_str()),
        Some("build_started")
    );
    assert_eq!(
        events.last().and_then(|e| e["result"].as_str()),
        Some("SUCCESS")
    );
    assert!(
        events
            .iter()
            .any(|e| e["text"].as_str() == Some("p=you e=blue\n")),
        "{out}"
    );
}

#[test]
fn secrets_file_is_masked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let secrets = dir.path().join("secrets");
    std::fs::write(&secrets, "tok=verysecret\n").expect("write secrets");
    let (code, out, err) = valet_run(
        "node { withCredentials([string(credentialsId: 'tok', variable: 'T')]) { sh 'echo $T' } }",
        &["--secrets", secrets.to_str().expect("path")],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        !out.contains("verysecret") && !err.contains("verysecret"),
        "{out}{err}"
    );
    assert!(out.contains("****"), "{out}");
}

#[test]
fn help_documents_exit_codes() {
    let out = Command::new(env!("CARGO_BIN_EXE_valet"))
        .args(["run", "--help"])
        .output()
        .expect("run valet");
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "0  SUCCESS",
        "1  FAILURE",
        "2  UNSTABLE",
        "3  ABORTED",
        "4  ERROR",
        "VALET_SECRET_",
    ] {
        assert!(text.contains(line), "`{line}` missing from:\n{text}");
    }
}

/// The Jenkins variables a pipeline can read: build number, job name, workspace, and — when
/// the pipeline file sits in a git checkout — the commit and branch of that checkout.
#[test]
fn jenkins_variables_come_from_the_build_and_the_checkout() {
    let dir = tempfile::tempdir().expect("temp dir");
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(dir.path())
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    git(&["init", "-q", "-b", "feature-x"]);
    std::fs::write(
        dir.path().join("Jenkinsfile"),
        "node {\n  echo \"vars ${env.BUILD_NUMBER} ${env.JOB_NAME} ${env.GIT_COMMIT} ${env.BRANCH_NAME} ${env.WORKSPACE != null}\"\n}\n",
    )
    .expect("write Jenkinsfile");
    git(&["add", "Jenkinsfile"]);
    git(&["commit", "-q", "-m", "pipeline"]);
    let head = git(&["rev-parse", "HEAD"]);
    let file = dir.path().join("Jenkinsfile");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_valet"))
        .args(["run", file.to_str().expect("utf-8 path")])
        .output()
        .expect("valet runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A file named `Jenkinsfile` takes its job name from its folder, as a Jenkins job from its repository.
    let job = dir
        .path()
        .file_name()
        .expect("dir name")
        .to_string_lossy()
        .into_owned();
    assert!(
        stdout.contains(&format!("vars 1 {job} {head} feature-x true")),
        "{stdout}"
    );
}

#[test]
fn rust_log_traces_the_build_its_job_and_each_step_with_durations() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("Jenkinsfile");
    std::fs::write(&file, "node { sh 'true'; sh 'echo two' }").expect("write pipeline");
    let out = Command::new(env!("CARGO_BIN_EXE_valet"))
        .arg("run")
        .arg(&file)
        .env("RUST_LOG", "valet_runtime=info")
        .current_dir(dir.path())
        .output()
        .expect("run valet");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let closed = |span: &str| {
        err.lines()
            .filter(|l| l.contains(span) && l.contains("close time.busy="))
            .count()
    };
    assert_eq!(closed("step{id="), 2, "{err}");
    assert_eq!(
        closed(": valet_runtime::steps: close"),
        3,
        "the job and two steps\n{err}"
    );
    assert!(
        err.lines()
            .any(|l| l.starts_with(|c: char| c.is_ascii_digit())
                && l.contains("}: valet_runtime: close")),
        "the build's span\n{err}"
    );
    // Without RUST_LOG, stderr has no trace lines.
    let (code, _, quiet) = valet_run("node { sh 'true' }", &[]);
    assert_eq!(code, 0);
    assert!(!quiet.contains("time.busy"), "{quiet}");
}
