//! `valet check` and `valet plan` as a user runs them: exit codes, output forms.

use std::process::{Command, Output};

fn valet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_valet"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .output()
        .expect("valet runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn check_passes_every_example_pipeline() {
    let files: Vec<String> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../pipelines"))
            .expect("pipelines/")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "groovy"))
            .map(|p| p.display().to_string())
            .collect();
    assert!(files.len() >= 25, "only {} example pipelines", files.len());
    let mut args = vec!["check"];
    args.extend(files.iter().map(String::as_str));
    let out = valet(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn check_fails_on_each_invalid_pipeline_and_reports_every_error() {
    let out = valet(&["check", "pipelines/invalid/semantic-several-errors.groovy"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    let count = err.matches("error[").count();
    assert!(
        count >= 3,
        "expected every independent error, got {count}:\n{err}"
    );
    assert!(
        err.contains("pipelines/invalid/semantic-several-errors.groovy:"),
        "{err}"
    );
}

#[test]
fn check_mixes_good_and_bad_files() {
    let out = valet(&[
        "check",
        "pipelines/local-shell-basics.groovy",
        "pipelines/invalid/semantic-unknown-step.groovy",
        "no/such/file",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let (o, e) = (text(&out.stdout), text(&out.stderr));
    assert!(o.contains("local-shell-basics.groovy: ok"), "{o}");
    assert!(
        e.contains("unknown step `shh`") && e.contains("did you mean `sh`?"),
        "{e}"
    );
    assert!(e.contains("cannot read no/such/file"), "{e}");
    assert!(e.contains("2 of 3 files failed"), "{e}");
}

#[test]
fn unknown_parameters_are_warnings_and_a_missing_required_one_is_the_error() {
    let out = valet(&["check", "pipelines/unknown-parameters-warn.groovy"]);
    let e = text(&out.stderr);
    assert!(out.status.success(), "{e}");
    assert!(
        e.contains("warning[unknown-parameter]: `git` has no parameter `tag`; it is ignored"),
        "{e}"
    );
    assert!(
        e.contains("pipelines/unknown-parameters-warn.groovy:6:"),
        "{e}"
    );
    let out = valet(&[
        "check",
        "pipelines/invalid/semantic-unknown-parameter.groovy",
    ]);
    let e = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(
        e.contains("`sh` needs its `script` parameter") && e.contains("did you mean `script`?"),
        "{e}"
    );
}

/// The sample plan in the README is what `valet plan` prints (up to its `…`).
#[test]
fn the_readme_sample_plan_is_the_real_output() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let start = readme
        .find("```\npipelines/k8s-maven-golang.groovy (scripted pipeline")
        .expect("the README shows a sample plan");
    let block = &readme[start + 4..];
    let block = &block[..block.find("```").unwrap()];
    let out = valet(&["plan", "pipelines/k8s-maven-golang.groovy"]);
    assert!(out.status.success());
    let real = text(&out.stdout);
    let shown: Vec<&str> = block.lines().take_while(|l| l.trim() != "…").collect();
    let real_lines: Vec<&str> = real.lines().take(shown.len()).collect();
    assert_eq!(
        shown, real_lines,
        "README.md's sample plan differs from the real output"
    );
}

#[test]
fn plan_text_shows_jobs_pods_limits_and_containers() {
    let out = valet(&["plan", "pipelines/k8s-container-template-limits.groovy"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let o = text(&out.stdout);
    assert!(o.contains("job-1"), "{o}");
    assert!(o.contains("memory limit"), "{o}");
    assert!(o.contains("@"), "steps show their container:\n{o}");
}

#[test]
fn plan_json_is_the_documented_bill_of_materials() {
    let out = valet(&[
        "plan",
        "pipelines/k8s-maven-golang.groovy",
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["version"], 1);
    assert_eq!(v["form"], "scripted");
    let images: Vec<&str> = v["jobs"][0]["pod"]["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .filter_map(|c| c["image"].as_str())
        .collect();
    assert!(images.iter().any(|i| i.starts_with("maven")), "{images:?}");
    assert!(images.iter().any(|i| i.starts_with("golang")), "{images:?}");
}

#[test]
fn plan_dot_renders_with_graphviz() {
    let out = valet(&[
        "plan",
        "pipelines/parallel-literal-map.groovy",
        "--format",
        "dot",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let dot = text(&out.stdout);
    assert!(dot.starts_with("digraph pipeline {"), "{dot}");
    let Ok(mut child) = Command::new("dot")
        .arg("-Tsvg")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        // `just setup` installs Graphviz; without it only the DOT text is checked.
        eprintln!("graphviz `dot` not installed: skipping the render check (run `just setup`)");
        return;
    };
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(dot.as_bytes())
        .expect("write dot");
    let rendered = child.wait_with_output().expect("dot runs");
    assert!(
        rendered.status.success(),
        "dot rejected the graph: {}",
        text(&rendered.stderr)
    );
    assert!(text(&rendered.stdout).contains("<svg"));
}

#[test]
fn plan_refuses_an_invalid_file_with_its_diagnostic() {
    let out = valet(&["plan", "pipelines/invalid/syntax-missing-paren.groovy"]);
    assert_eq!(out.status.code(), Some(1));
    let e = text(&out.stderr);
    assert!(
        e.contains("syntax-missing-paren.groovy:6:45") && e.contains("^"),
        "{e}"
    );
}

#[test]
fn deep_nesting_is_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("valet-deep-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let file = dir.join("deep.groovy");
    std::fs::write(
        &file,
        format!("def x = {}1{}\n", "[".repeat(10_000), "]".repeat(10_000)),
    )
    .expect("write");
    let out = valet(&["check", file.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("nested too deeply"),
        "{}",
        text(&out.stderr)
    );
    let ok = dir.join("ok.groovy");
    std::fs::write(
        &ok,
        format!("def x = {}1{}\n", "[".repeat(250), "]".repeat(250)),
    )
    .expect("write");
    let out = valet(&["check", ok.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let _ = std::fs::remove_dir_all(dir);
}
