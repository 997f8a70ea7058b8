//! Runs every `pipelines/local-*.groovy` on the local backend and snapshots its result and
//! normalised output (temp paths, durations and clock times replaced).
//!
//! The transcript is deterministic: the stdout of a step is shown when the step ends, and
//! each parallel branch has its own section, in the order of branch names. Stderr is left
//! out: the `+ cmd` traces of `sh -x` for the commands of a shell pipeline are written
//! concurrently, so their order (and even their characters) interleave differently from run
//! to run. A file that cannot run on the local backend says so in a comment
//! `// valet-test: skip <reason>`, and the test prints that reason.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use valet_runtime::{CancellationToken, Event, RunOptions, Stream};

fn skip_reason(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        l.trim()
            .strip_prefix("// valet-test: skip")
            .map(|r| r.trim().to_string())
    })
}

fn transcript(events: &[Event]) -> String {
    let mut sections: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut steps: HashMap<u64, (String, String)> = HashMap::new();
    let push =
        |sections: &mut BTreeMap<String, Vec<String>>, branch: &Option<String>, line: String| {
            sections
                .entry(branch.clone().unwrap_or_default())
                .or_default()
                .push(line);
        };
    let lines = |text: &str| -> Vec<String> { text.lines().map(str::to_string).collect() };
    for e in events {
        match e {
            Event::BuildStarted { job_name, .. } => {
                push(&mut sections, &None, format!("build of {job_name}"))
            }
            Event::Notice { message, .. } => push(&mut sections, &None, format!("note: {message}")),
            Event::JobStarted {
                label,
                place,
                containers,
                ..
            } => push(
                &mut sections,
                &place.branch,
                format!(
                    "── node {} [{}]",
                    label.as_deref().unwrap_or("(any)"),
                    containers.join(", ")
                ),
            ),
            Event::StageStarted {
                name,
                parallel_branch,
                place,
                ..
            } => push(
                &mut sections,
                &place.branch,
                format!(
                    "── {} {name}",
                    if *parallel_branch { "branch" } else { "stage" }
                ),
            ),
            Event::StageFinished {
                name,
                parallel_branch,
                result,
                skipped,
                place,
                ..
            } => push(
                &mut sections,
                &place.branch,
                format!(
                    "── {} {name}: {}",
                    if *parallel_branch { "branch" } else { "stage" },
                    if *skipped {
                        "skipped".to_string()
                    } else {
                        result.to_string()
                    }
                ),
            ),
            Event::Output {
                step: Some(id),
                stream,
                text,
                ..
            } if *stream != Stream::Log => {
                let buf = steps.entry(*id).or_default();
                if *stream == Stream::Stdout {
                    buf.0.push_str(text);
                } else {
                    buf.1.push_str(text);
                }
            }
            Event::Output { text, place, .. } => {
                for l in lines(text) {
                    push(&mut sections, &place.branch, l);
                }
            }
            Event::StepFinished { id, place, .. } => {
                if let Some((out, err)) = steps.remove(id) {
                    for l in lines(&out) {
                        push(&mut sections, &place.branch, l);
                    }
                    let _ = err;
                }
            }
            Event::BuildFinished { result, .. } => {
                push(&mut sections, &None, format!("result: {result}"))
            }
            _ => {}
        }
    }
    let mut out = String::new();
    for (branch, lines) in sections {
        if !branch.is_empty() {
            out.push_str(&format!("\n[{branch}]\n"));
        }
        for l in lines {
            out.push_str(&l);
            out.push('\n');
        }
    }
    out
}

fn normalise(text: &str, artifacts: &Path) -> String {
    let mut s = text.replace(&artifacts.display().to_string(), "<artifacts>");
    let tmp = std::env::temp_dir().display().to_string();
    let tmp = tmp.trim_end_matches('/');
    let re = regex::Regex::new(&format!(r"{}/valet-[A-Za-z0-9._-]*", regex::escape(tmp)))
        .expect("regex");
    s = re.replace_all(&s, "<tmp>").into_owned();
    if let Ok(home) = std::env::var("HOME")
        && home.len() > 1
    {
        s = s.replace(&home, "<home>");
    }
    let rules = [
        (r"\b\d+(\.\d+)? ?ms\b", "N ms"),
        (r"\b\d+ sec\b", "N sec"),
        (r"\b\d{1,2}:\d{2}(:\d{2})?\b", "HH:MM"),
        (
            r"\b(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) +\d{1,2}\b",
            "Mon D",
        ),
        (r"\b\d{10,}\b", "<number>"),
    ];
    for (pat, with) in rules {
        s = regex::Regex::new(pat)
            .expect("regex")
            .replace_all(&s, with)
            .into_owned();
    }
    s
}

fn run_file(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("read pipeline");
    if let Some(reason) = skip_reason(&text) {
        eprintln!("skipped {}: {reason}", path.display());
        return format!("skipped: {reason}\n");
    }
    let parsed = valet_dsl::parse(&text);
    assert!(
        !parsed.has_errors(),
        "{} does not parse: {:?}",
        path.display(),
        parsed.diagnostics
    );
    let script = parsed.script.expect("script");
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("pipeline")
        .to_string();
    let source = valet_dsl::SourceFile::new(name, text);
    let plan = valet_plan::plan(&script, &source);
    let artifacts = tempfile::tempdir().expect("temp dir");
    let opts = RunOptions {
        artifacts_dir: Some(artifacts.path().to_path_buf()),
        ..RunOptions::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let events = rt.block_on(async {
        let backend = valet_local::LocalBackend::temporary();
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        let collect = tokio::spawn(async move {
            let mut v = Vec::new();
            while let Some(e) = rx.recv().await {
                v.push(e);
            }
            v
        });
        let _ = valet_runtime::run(
            &script,
            &source,
            &plan.graph,
            &backend,
            &opts,
            tx,
            CancellationToken::new(),
        )
        .await;
        collect.await.expect("events")
    });
    normalise(&transcript(&events), artifacts.path())
}

#[test]
fn local_pipelines() {
    insta::glob!("../../pipelines", "local-*.groovy", |path| {
        insta::assert_snapshot!(run_file(path));
    });
}

/// The pipelines that are not run by `local_pipelines` say why, here: each needs something
/// this machine's local backend cannot give. A new example that could run locally must be
/// named `local-*.groovy` (and is then run), or this test fails.
#[test]
fn other_pipelines_say_why_they_are_not_run() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines");
    let mut report = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("pipelines/") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        if !name.ends_with(".groovy") || name.starts_with("local-") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable");
        let source = valet_dsl::SourceFile::new(name.clone(), text.clone());
        let script = valet_dsl::parse(&text).script.expect("valid example");
        let graph = valet_plan::plan(&script, &source).graph;
        let mut reasons = Vec::new();
        let images: Vec<String> = graph
            .jobs
            .iter()
            .flat_map(|j| j.pod.containers.iter())
            .filter(|c| !c.jnlp)
            .filter_map(|c| c.image.clone())
            .collect();
        if !images.is_empty() {
            reasons.push(format!("needs container images ({})", images.join(", ")));
        }
        if graph
            .jobs
            .iter()
            .any(|j| !j.pod.yaml.is_empty() || j.pod.open)
        {
            reasons.push("needs a pod template defined outside the file or in YAML".to_string());
        }
        for (needle, why) in [
            ("docker.", "drives a Docker engine from the pipeline"),
            ("docker build", "builds images with the docker CLI"),
            (
                "valet/busybox",
                "is run on the Docker backend by crates/valet-cli/tests/run_docker.rs",
            ),
            ("git url", "clones a remote repository"),
            ("checkout", "checks out a remote repository"),
            ("withCredentials", "needs credentials from a store"),
            ("credentials(", "needs credentials from a store"),
            ("input", "waits for a person to approve"),
            ("build job", "triggers another job"),
            ("load ", "loads files from a repository checkout"),
            ("mvn ", "runs Maven"),
            (
                "make ",
                "runs project build scripts that are not in this repository",
            ),
            ("./", "runs project scripts that are not in this repository"),
            ("kubectl", "talks to a Kubernetes cluster"),
        ] {
            if text.contains(needle) && !reasons.iter().any(|r| r == why) {
                reasons.push(why.to_string());
            }
        }
        assert!(
            !reasons.is_empty(),
            "{name} gives no reason not to run on the local backend: name it local-*.groovy so it is run"
        );
        report.push(format!("{name}: not run: {}", reasons.join("; ")));
    }
    report.sort();
    eprintln!("{}", report.join("\n"));
    assert!(
        report.len() >= 20,
        "expected the non-local examples, found {}",
        report.len()
    );
}
