//! A backend is one crate and one enum arm: the recording fake backend, registered as the
//! kind `fake` in `valet-backends`, runs a pipeline through `valet run` and through
//! `valet serve`, and what it was asked for is exactly what the pipeline said, every value
//! evaluated (no `${…}` reaches a backend).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use common::{http_text, repo_with, serve};

/// A pod whose container's environment, and whose `node` label, are only known when the
/// build runs: they come from a parameter.
const PIPELINE: &str = r#"
properties([parameters([string(name: 'V', defaultValue: '1')])])
podTemplate(containers: [
    containerTemplate(name: 'build', image: 'busybox', command: 'sleep', args: 'infinity',
        resourceRequestCpu: '500m', resourceRequestMemory: '256Mi',
        envVars: [envVar(key: 'VER', value: "v${params.V}")]),
]) {
    node(POD_LABEL) {
        container('build') {
            sh 'echo "version $VER"'
        }
    }
}
"#;

fn calls(record: &Path) -> Vec<Value> {
    std::fs::read_to_string(record)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn provisions(calls: &[Value]) -> Vec<&Value> {
    calls.iter().filter(|c| c["call"] == "provision").collect()
}

/// The container's environment as the fake backend was given it.
fn env_of(provision: &Value, container: &str) -> Vec<(String, String)> {
    let c = provision["spec"]["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .find(|c| c["name"] == container)
        .unwrap_or_else(|| panic!("no container {container} in {provision:#}"));
    let env = &c["env"];
    match env {
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect(),
        Value::Array(a) => a
            .iter()
            .map(|e| {
                (
                    e["name"]
                        .as_str()
                        .or(e["key"].as_str())
                        .unwrap_or_default()
                        .into(),
                    e["value"].as_str().unwrap_or_default().into(),
                )
            })
            .collect(),
        other => panic!("env is {other}"),
    }
}

#[test]
fn valet_run_with_the_fake_backend_gets_every_value_evaluated() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("Jenkinsfile");
    std::fs::write(&file, PIPELINE).unwrap();
    let record = dir.path().join("calls.jsonl");
    let out = Command::new(env!("CARGO_BIN_EXE_valet"))
        .args(["run", "--backend", "fake", "--backend-opt"])
        .arg(format!("record={}", record.display()))
        .args(["-p", "V=7"])
        .arg(&file)
        .output()
        .expect("valet runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let calls = calls(&record);
    let p = provisions(&calls);
    assert_eq!(p.len(), 1, "{calls:#?}");
    let env = env_of(p[0], "build");
    assert!(
        env.contains(&("VER".to_string(), "v7".to_string())),
        "the container's env is evaluated with the build's parameters: {env:?}"
    );
    assert!(
        !p[0].to_string().contains("${"),
        "nothing unevaluated reaches a backend: {:#}",
        p[0]
    );
    // The request names the job and the label the pipeline asked for.
    assert_eq!(p[0]["job"], "job-1", "{:#}", p[0]);
    assert!(
        p[0]["label"].as_str().is_some_and(|l| !l.is_empty()),
        "{:#}",
        p[0]
    );
    // The step went to the container it named, through the pod the fake made.
    let start = calls
        .iter()
        .find(|c| c["call"] == "start")
        .unwrap_or_else(|| panic!("no step started: {calls:#?}"));
    assert_eq!(start["container"], "build");
    assert_eq!(start["pod"], p[0]["pod"]);
    assert!(
        start["argv"].to_string().contains("version $VER"),
        "{start}"
    );
    // Torn down, and the run's start-of-run clean-up asked the backend for its orphans.
    assert!(
        calls
            .iter()
            .any(|c| c["call"] == "teardown" && c["pod"] == p[0]["pod"])
    );
    assert!(calls.iter().any(|c| c["call"] == "collect_orphans"));
    // The summary explains the pod's start phase by phase.
    let all = format!("{stdout}{stderr}");
    assert!(all.contains("Pod start"), "{all}");
    assert!(all.contains("placed +"), "{all}");
}

#[test]
fn an_unknown_backend_or_option_is_refused_and_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("Jenkinsfile");
    std::fs::write(&file, PIPELINE).unwrap();
    let record = dir.path().join("calls.jsonl");
    let out = Command::new(env!("CARGO_BIN_EXE_valet"))
        .args(["run", "--backend", "podman"])
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("podman"), "{err}");
    assert!(
        err.contains("fake") && err.contains("docker"),
        "lists the kinds: {err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_valet"))
        .args([
            "run",
            "--backend",
            "fake",
            "--backend-opt",
            "colour=red",
            "--backend-opt",
        ])
        .arg(format!("record={}", record.display()))
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("colour"), "{err}");
    assert!(!record.exists(), "nothing was provisioned");
}

#[test]
fn valet_serve_with_the_fake_backend_records_the_pod_phases_of_a_build() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo_with(dir.path(), PIPELINE);
    let record = dir.path().join("calls.jsonl");
    let config = dir.path().join("valet.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:0\ndata_dir: data\nbackend:\n  kind: fake\n  record: {}\nrepositories:\n  - name: app\n    url: {}\n    secret: s3cret\n",
            record.display(),
            repo.display()
        ),
    )
    .unwrap();
    let (mut child, addr) = serve(&config);
    let id = common::trigger(addr, "app", r#"{"branch":"main","parameters":{"V":"9"}}"#);
    let build = common::wait_finished(addr, id, Duration::from_secs(60));
    let (_, metrics) = http_text(addr, "GET", "/metrics", "");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(build["result"], "SUCCESS", "{build:#}");
    // Each phase as a histogram per backend.
    assert!(
        metrics.contains(
            "valet_pod_phase_seconds_count{backend=\"fake\",phase=\"agent_connected\"} 1"
        ),
        "{metrics}"
    );
    let calls = calls(&record);
    let p = provisions(&calls);
    assert_eq!(p.len(), 1, "{calls:#?}");
    assert_eq!(p[0]["repository"], "app", "{:#}", p[0]);
    assert!(
        env_of(p[0], "build").contains(&("VER".to_string(), "v9".to_string())),
        "{:#}",
        p[0]
    );
    // The controller stored each phase of the pod's start and shows them in the API.
    let pods = build["pods"]
        .as_array()
        .expect("pods in the build's detail");
    assert_eq!(pods.len(), 1, "{build:#}");
    assert_eq!(pods[0]["pod"], p[0]["pod"]);
    assert_eq!(pods[0]["backend"], "fake");
    let phases: Vec<&str> = pods[0]["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["phase"].as_str().unwrap())
        .collect();
    for phase in ["queued", "placed", "created", "started", "agent_connected"] {
        assert!(phases.contains(&phase), "{phase} missing from {phases:?}");
    }
}

/// The container policy: `privileged: true` is refused unless allowed, before any backend
/// sees the pod; a container without a CPU limit gets the default one.
#[test]
fn privileged_containers_are_refused_unless_allowed_and_cpu_limits_default() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("Jenkinsfile");
    std::fs::write(
        &file,
        "podTemplate(containers: [containerTemplate(name: 'dind', image: 'docker:dind', privileged: true)]) {\n  node(POD_LABEL) {\n    container('dind') { sh 'true' }\n  }\n}\n",
    )
    .unwrap();
    let run = |extra: &[&str], record: &Path| {
        Command::new(env!("CARGO_BIN_EXE_valet"))
            .args(["run", "--backend", "fake", "--backend-opt"])
            .arg(format!("record={}", record.display()))
            .args(extra)
            .arg(&file)
            .output()
            .expect("valet runs")
    };
    let refused = dir.path().join("refused.jsonl");
    let out = run(&[], &refused);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("'dind' asks to be privileged"), "{text}");
    assert!(
        provisions(&calls(&refused)).is_empty(),
        "nothing was provisioned"
    );

    let allowed = dir.path().join("allowed.jsonl");
    let out = run(
        &["--allow-privileged", "--default-cpu-limit", "1500"],
        &allowed,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let calls = calls(&allowed);
    let p = provisions(&calls);
    let c = p[0]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "dind")
        .expect("the dind container");
    assert_eq!(c["privileged"], true, "{c:#}");
    assert_eq!(c["resources"]["limit_cpu_millis"], 1500, "{c:#}");
}

/// A CPU limit past any machine is refused as a flag, before anything runs.
#[test]
fn an_absurd_default_cpu_limit_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_valet"))
        .args([
            "run",
            "--backend",
            "fake",
            "--default-cpu-limit",
            "99999999999999",
            "x.groovy",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--default-cpu-limit"), "{err}");
}
