//! On the local backend no process of a build outlives `valet run`, also not one a step
//! started in a session of its own (`setsid … &`); the built binary is run as a user would.

use std::process::Command;

/// A sleep duration no other process on the machine has in its command line.
fn marker() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("3{:05}.{:09}", std::process::id() % 100_000, nanos)
}

/// The live processes whose command line contains `marker`, with that command line.
fn processes_with(marker: &str) -> Vec<(i32, String)> {
    valet_process::marks::with_cmdline(marker)
        .into_iter()
        .map(|pid| (pid, valet_process::marks::cmdline(pid)))
        .collect()
}

#[test]
fn a_process_a_step_started_with_setsid_does_not_outlive_valet_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("Jenkinsfile");
    let m = marker();
    // The escaped process leaves a file, so the test knows it ran.
    let started = dir.path().join("escaped-started");
    std::fs::write(
        &file,
        format!(
            "node {{\n  sh \"setsid sh -c 'touch {0}; sleep {m}; true' &\"\n  sh 'i=0; while [ ! -e {0} ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done'\n}}\n",
            started.display()
        ),
    )
    .expect("write pipeline");
    let out = Command::new(env!("CARGO_BIN_EXE_valet"))
        .arg("run")
        .arg(&file)
        .current_dir(dir.path())
        .output()
        .expect("run valet");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(started.exists(), "the escaped process ran: {stdout}");
    let left = processes_with(&m);
    assert!(left.is_empty(), "left behind by `valet run`: {left:?}");
}
