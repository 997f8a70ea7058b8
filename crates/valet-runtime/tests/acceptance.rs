//! Acceptance tests of issue 3, each a real run on the local backend.

mod common;

use std::time::{Duration, Instant};

use valet_runtime::{BuildResult, CancellationToken, Event, RunOptions, Secrets, Stream};

/// A number no other process has in its command line.
fn marker() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "7{:04}.{:06}",
        std::process::id() % 10_000,
        nanos % 1_000_000
    )
}

/// Live (not zombie) processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(format!("/proc/{name}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(marker) {
            let state = std::fs::read_to_string(format!("/proc/{name}/stat")).unwrap_or_default();
            let zombie = state
                .rsplit(')')
                .next()
                .is_some_and(|s| s.trim_start().starts_with('Z'));
            if !zombie {
                found.push(format!("{name}: {cmdline}"));
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_quoted_dollar_reaches_the_shell_and_gstrings_interpolate() {
    let mut opts = RunOptions::default();
    opts.env.insert("VALET_T".into(), "from-env".into());
    let r = common::run_with(
        r#"
node {
    sh 'echo "shell:[$VALET_T]"'
    sh 'echo \'literal:[$HOME]\''
    sh 'echo "home:[$HOME]"'
    echo "groovy:[${env.HOME}] [${env.VALET_T}]"
    def name = 'x'
    echo "plain $name and ${name.toUpperCase()} and \$HOME"
}
"#,
        opts,
    )
    .await;
    let home = std::env::var("HOME").expect("HOME");
    let out = r.output();
    assert_eq!(r.outcome.result, BuildResult::Success, "{out}");
    assert!(out.contains("shell:[from-env]"), "{out}");
    assert!(
        out.contains("literal:[$HOME]"),
        "the shell got `$HOME` as written: {out}"
    );
    assert!(out.contains(&format!("home:[{home}]")), "{out}");
    assert!(
        out.contains(&format!("groovy:[{home}] [from-env]")),
        "{out}"
    );
    assert!(out.contains("plain x and X and $HOME"), "{out}");
    // `sh` runs with -x: the trace of each command is on stderr.
    assert!(
        r.stream(Stream::Stderr).contains("+ echo shell:[from-env]"),
        "{}",
        r.stream(Stream::Stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_kills_the_step_process_tree() {
    let m = marker();
    let started = Instant::now();
    let r = common::run(&format!(
        "node {{\n  timeout(time: 1, unit: 'SECONDS') {{\n    sh 'sleep {m} & sleep {m}'\n  }}\n}}\n"
    ))
    .await;
    let took = started.elapsed();
    assert_ne!(r.outcome.result, BuildResult::Success);
    assert_eq!(
        r.outcome.result,
        BuildResult::Aborted,
        "a timeout aborts the build, as in Jenkins"
    );
    assert!(took < Duration::from_secs(3), "the build took {took:?}");
    assert!(
        r.outcome.error.as_deref().unwrap_or("").contains("Timeout"),
        "{:?}",
        r.outcome.error
    );
    let left = processes_with(&m);
    assert!(
        left.is_empty(),
        "processes of the step are still alive: {left:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_reruns_the_body() {
    let r = common::run(
        r#"
node {
    retry(3) {
        sh 'echo x >> attempts.txt; test "$(wc -l < attempts.txt)" -ge 3'
    }
    echo "attempts=${readFile('attempts.txt').readLines().size()}"
}
"#,
    )
    .await;
    assert_eq!(r.outcome.result, BuildResult::Success, "{}", r.output());
    assert!(r.output().contains("attempts=3"), "{}", r.output());

    let r = common::run(
        r#"
node {
    try {
        retry(2) { sh 'echo x >> attempts.txt; exit 1' }
    } finally {
        echo "attempts=${readFile('attempts.txt').readLines().size()}"
    }
}
"#,
    )
    .await;
    assert_eq!(r.outcome.result, BuildResult::Failure);
    assert!(r.output().contains("attempts=2"), "{}", r.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_error_marks_the_stage_and_continues() {
    let r = common::run(
        r#"
node {
    stage('Bad') {
        catchError(buildResult: 'UNSTABLE', stageResult: 'FAILURE') {
            sh 'exit 1'
        }
        echo 'after the error, in the stage'
    }
    stage('Next') {
        echo "next ran; build is ${currentBuild.currentResult}"
    }
}
"#,
    )
    .await;
    let out = r.output();
    assert_eq!(r.outcome.result, BuildResult::Unstable, "{out}");
    assert_eq!(r.stage_result("Bad"), Some(BuildResult::Failure));
    assert_eq!(r.stage_result("Next"), Some(BuildResult::Success));
    assert!(out.contains("after the error, in the stage"), "{out}");
    assert!(out.contains("next ran; build is UNSTABLE"), "{out}");

    let r = common::run("node { catchError { error 'boom' }\n echo 'went on' }").await;
    assert_eq!(r.outcome.result, BuildResult::Failure);
    assert!(r.output().contains("went on"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_fast_aborts_the_other_branches() {
    let m = marker();
    let started = Instant::now();
    let r = common::run(&format!(
        r#"
node {{
    parallel(
        failFast: true,
        fast: {{ sh 'sleep 0.3; exit 1' }},
        slow: {{ sh 'sleep {m}'; echo 'slow finished' }},
    )
}}
"#
    ))
    .await;
    let took = started.elapsed();
    let out = r.output();
    assert_eq!(r.outcome.result, BuildResult::Failure, "{out}");
    assert!(took < Duration::from_secs(5), "failFast took {took:?}");
    assert!(!out.contains("slow finished"), "{out}");
    assert_eq!(r.stage_result("fast"), Some(BuildResult::Failure));
    assert_eq!(r.stage_result("slow"), Some(BuildResult::Aborted));
    assert!(processes_with(&m).is_empty());

    // Without failFast, the other branch runs to its end.
    let r = common::run(
        "node { parallel(a: { sh 'exit 1' }, b: { sh 'sleep 0.3'; echo 'b finished' }) }",
    )
    .await;
    assert_eq!(r.outcome.result, BuildResult::Failure);
    assert!(r.output().contains("b finished"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_branches_run_concurrently() {
    let started = Instant::now();
    let r = common::run(
        "node { parallel(a: { sh 'sleep 1' }, b: { sh 'sleep 1' }, c: { sh 'sleep 1' }) }",
    )
    .await;
    assert_eq!(r.outcome.result, BuildResult::Success);
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_masked_even_in_pieces() {
    let mut secrets = Secrets::default();
    secrets
        .load_str("token=secret\ndeploy.username=robot\ndeploy.password=hunter22\n")
        .expect("secrets");
    let opts = RunOptions {
        secrets,
        ..RunOptions::default()
    };
    let r = common::run_with(
        r#"
node {
    withCredentials([string(credentialsId: 'token', variable: 'T'),
                     usernamePassword(credentialsId: 'deploy', usernameVariable: 'U', passwordVariable: 'P')]) {
        sh "printf 'sec'; sleep 0.2; printf 'ret'; echo"
        sh 'echo "value: $T"; printf "%s" "$T" | base64; echo "$U:$P"'
        echo "from groovy: ${env.T}"
    }
}
"#,
        opts,
    )
    .await;
    let all: String = r
        .events
        .iter()
        .map(|e| serde_json::to_string(e).expect("json"))
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(r.outcome.result, BuildResult::Success, "{}", r.output());
    for leaked in ["secret", "c2VjcmV0", "hunter22", "robot"] {
        assert!(!all.contains(leaked), "`{leaked}` leaked: {all}");
    }
    let out = r.output();
    assert!(out.contains("value: ****"), "{out}");
    assert!(out.contains("from groovy: ****"), "{out}");
    // The pieces printed apart arrive as separate chunks and are still masked.
    let stdout = r.stream(Stream::Stdout);
    assert!(stdout.starts_with("****\n"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_credentials_fail_with_the_id() {
    let r = common::run(
        "node { withCredentials([string(credentialsId: 'nope', variable: 'X')]) { echo 'no' } }",
    )
    .await;
    assert_eq!(r.outcome.result, BuildResult::Failure);
    assert!(r.outcome.error.as_deref().unwrap_or("").contains("'nope'"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_and_return_values_of_sh() {
    let r = common::run(
        r#"
node {
    def out = sh(script: 'echo hello', returnStdout: true)
    def status = sh(script: 'exit 3', returnStatus: true)
    echo "out=[${out}] trimmed=[${out.trim()}] status=${status}"
    sh 'exit 2'
    echo 'not reached'
}
"#,
    )
    .await;
    let out = r.output();
    assert_eq!(r.outcome.result, BuildResult::Failure);
    // returnStdout gives the output trimmed; an extra trim() changes nothing.
    assert!(
        out.contains("out=[hello] trimmed=[hello] status=3"),
        "{out}"
    );
    assert_eq!(
        r.outcome.error.as_deref(),
        Some("script returned exit code 2")
    );
    assert!(!out.contains("not reached"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declarative_post_and_results() {
    let r = common::run(
        r#"
pipeline {
    agent any
    environment { GREETING = 'hi' }
    stages {
        stage('One') { steps { echo "${GREETING} from one" } }
        stage('Two') { steps { sh 'exit 1' } }
        stage('Three') { steps { echo 'three' } }
    }
    post {
        always { echo 'post always' }
        failure { echo 'post failure' }
        success { echo 'post success' }
    }
}
"#,
    )
    .await;
    let out = r.output();
    assert_eq!(r.outcome.result, BuildResult::Failure, "{out}");
    assert!(out.contains("hi from one"));
    assert!(
        out.contains("post always")
            && out.contains("post failure")
            && !out.contains("post success"),
        "{out}"
    );
    assert!(!out.contains("three\n"), "{out}");
    let three = r
        .outcome
        .stages
        .iter()
        .find(|s| s.path == ["Three"])
        .expect("stage Three");
    assert!(three.skipped);
    assert!(
        r.events
            .iter()
            .any(|e| matches!(e, Event::JobStarted { .. }))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interpreter_basics() {
    let r = common::run(
        r#"
def twice(x, f = { it * 2 }) { return f(x) }
def items = ['b', 'a', 'c']
def m = [:]
items.eachWithIndex { it, i -> m[it] = i }
assert_eq = { a, b -> if (a != b) { error "expected ${b}, got ${a}" } }
assert_eq(twice(21), 42)
assert_eq(items.sort().join(','), 'a,b,c')
assert_eq(m.keySet().join(''), 'bac')
assert_eq('a,b,,'.split(','), ['a', 'b'])
assert_eq('12' as Integer, 12)
assert_eq('v1.2.3' ==~ /v\d+\.\d+\.\d+/, true)
def mt = ('build-42' =~ /(\d+)/)
assert_eq(mt[0][1], '42')
assert_eq([1, 2, 3].findAll { it > 1 }.size(), 2)
assert_eq([1, 2, 3].any { it > 2 } && [1, 2].every { it > 0 }, true)
def s = 0
for (int i = 0; i < 5; i++) { if (i == 3) { continue }; s += i }
assert_eq(s, 7)
def r = ''
switch ('x') { case ['y', 'x']: r = 'list'; break; default: r = 'default' }
assert_eq(r, 'list')
currentBuild.description = 'desc'
assert_eq(currentBuild.description, 'desc')
assert_eq(currentBuild.result, null)
assert_eq(params.MISSING, null)
assert_eq("${1 + 2}", '3')
assert_eq(10 / 4, 2.5)
assert_eq(' pad '.trim().toUpperCase().replace('P', 'b'), 'bAD')
assert_eq('abcdef'.substring(1, 3), 'bc')
echo 'all good'
"#,
    )
    .await;
    assert_eq!(r.outcome.result, BuildResult::Success, "{}", r.output());
    assert!(r.output().contains("all good"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_the_build_aborts_it() {
    let text = "node { sh 'sleep 30' }";
    let parsed = valet_dsl::parse(text);
    let script = parsed.script.expect("script");
    let source = valet_dsl::SourceFile::new("t.groovy", text);
    let plan = valet_plan::plan(&script, &source);
    let backend = valet_local::LocalBackend::temporary();
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let cancel = valet_runtime::CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.cancel();
    });
    let started = Instant::now();
    let opts = RunOptions {
        kill_grace: Duration::from_millis(500),
        ..RunOptions::default()
    };
    let outcome =
        valet_runtime::run(&script, &source, &plan.graph, &backend, &opts, tx, cancel).await;
    assert_eq!(outcome.result, BuildResult::Aborted);
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// Whatever a pipeline nests, the interpreter stops short of the thread's stack: on a
/// thread with a small stack, 40 nested calls each evaluating an expression nested 200 deep
/// end the build with Jenkins' StackOverflowError and the line, and the process lives on.
#[test]
fn nesting_deeper_than_the_stack_allows_ends_the_build_not_the_process() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../pipelines/hostile/deep-expressions.groovy"
    ))
    .expect("the hostile example");
    let script = valet_dsl::parse(&text).script.expect("it parses");
    let source = valet_dsl::SourceFile::new("deep-expressions.groovy", &text);
    let plan = valet_plan::plan(&script, &source);
    let outcome = std::thread::scope(|s| {
        std::thread::Builder::new()
            .stack_size(1024 * 1024)
            .spawn_scoped(s, || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                let backend = valet_backend::fake::FakeBackend::new();
                let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
                rt.spawn(async move { while rx.recv().await.is_some() {} });
                rt.block_on(valet_runtime::run(
                    &script,
                    &source,
                    &plan.graph,
                    &backend,
                    &RunOptions::default(),
                    tx,
                    CancellationToken::new(),
                ))
            })
            .expect("a thread")
            .join()
            .expect("the build's thread did not panic")
    });
    assert_eq!(outcome.result, BuildResult::Failure);
    let error = outcome.error.unwrap_or_default();
    assert!(
        error.contains("StackOverflowError") && error.contains("at line 3"),
        "{error}"
    );
}

/// A secret put in a stage or branch name is masked wherever the name goes (events, the
/// stage summary), and each line of a multi-line secret is masked when printed on its own
/// (`head -1`, a prefix added by `sed`, CRLF line ends).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_in_names_and_single_lines_of_multi_line_secrets_are_masked() {
    let mut secrets = Secrets::default();
    secrets
        .load_str(
            r#"{"tok": "s3cr3t-name", "key": "LINE-ONE-abc\nLINE-TWO-def\r\nLINE-THREE-ghi\n"}"#,
        )
        .expect("secrets");
    let opts = RunOptions {
        secrets,
        ..RunOptions::default()
    };
    let r = common::run_with(
        r#"
node {
    withCredentials([string(credentialsId: 'tok', variable: 'T'), string(credentialsId: 'key', variable: 'K')]) {
        stage("deploy ${env.T}") {
            def branches = [:]
            branches["to ${env.T}"] = { sh 'echo branch' }
            branches['other'] = { sh 'echo other' }
            parallel branches
        }
        sh 'printf "%s\n" "$K" | head -1'
        sh 'printf "%s\n" "$K" | sed "s/^/> /"'
        sh 'printf "%s\n" "$K" | tail -1 | tr -d "\n"; echo'
    }
}
"#,
        opts,
    )
    .await;
    assert_eq!(r.outcome.result, BuildResult::Success, "{}", r.output());
    let events: String = r
        .events
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    for leak in ["s3cr3t-name", "LINE-ONE", "LINE-TWO", "LINE-THREE"] {
        assert!(!events.contains(leak), "{leak} in the events:\n{events}");
        assert!(
            !format!("{:?}", r.outcome.stages).contains(leak),
            "{leak} in the stage summary"
        );
    }
    assert!(events.contains("deploy ****"), "{events}");
    assert!(events.contains("to ****"), "{events}");
    assert!(r.output().contains("> ****"), "{}", r.output());
}

/// A volume the backend does not mount is named in a warning before the pod starts, not
/// dropped without a word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_the_backend_does_not_mount_is_named_in_a_warning() {
    let r = common::run(
        r#"
podTemplate(volumes: [hostPathVolume(hostPath: '/var/run/docker.sock', mountPath: '/var/run/docker.sock')]) {
    node(POD_LABEL) {
        sh 'true'
    }
}
"#,
    )
    .await;
    assert_eq!(r.outcome.result, BuildResult::Success, "{}", r.output());
    let warned = r.events.iter().any(|e| {
        matches!(e, Event::Notice { message, .. }
            if message.contains("hostPath /var/run/docker.sock at /var/run/docker.sock is left out"))
    });
    assert!(warned, "{:#?}", r.events);
}

/// The closing summary lists stages in the order they started, not the order they ended:
/// `Slow` starts first and ends last, yet comes first, run after run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_summary_lists_stages_in_the_order_they_started() {
    let r = common::run(
        r#"
node {
    stage('Build') { echo 'b' }
    parallel(
        slow: { stage('Slow') { sh 'sleep 0.5' } },
        quick: { stage('Quick') { echo 'q' } }
    )
    stage('After') { echo 'a' }
}
"#,
    )
    .await;
    let order: Vec<String> = r.outcome.stages.iter().map(|s| s.path.join("/")).collect();
    let slow = order
        .iter()
        .position(|p| p.ends_with("Slow"))
        .expect("Slow");
    let quick = order
        .iter()
        .position(|p| p.ends_with("Quick"))
        .expect("Quick");
    assert!(slow < quick, "{order:?}");
    assert_eq!(
        order.first().map(String::as_str),
        Some("Build"),
        "{order:?}"
    );
    assert_eq!(order.last().map(String::as_str), Some("After"), "{order:?}");
}

/// `timestamps { … }` and `options { timestamps() }` start each line of output with the
/// time; outside them, lines are as printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_prefix_each_line_with_the_time() {
    let stamped = |line: &str| {
        let b = line.as_bytes();
        b.len() > 11
            && b[0] == b'['
            && b[3] == b':'
            && b[6] == b':'
            && b[9] == b']'
            && b[10] == b' '
            && [1, 2, 4, 5, 7, 8].iter().all(|&i| b[i].is_ascii_digit())
    };
    let r = common::run(
        r#"
node {
    timestamps {
        echo 'from echo'
        sh 'printf "one\ntwo\n"; printf "part"; sleep 0.1; printf "ial\n"'
    }
    echo 'plain'
}
"#,
    )
    .await;
    // What the steps printed and valet's own lines, without the `+ cmd` traces of stderr,
    // which arrive on their own stream at their own times.
    let out: String = r
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Output { stream, text, .. } if *stream != Stream::Stderr => Some(text.as_str()),
            _ => None,
        })
        .collect();
    for want in ["from echo", "one", "two", "partial"] {
        let line = out
            .lines()
            .find(|l| *l == want || l.get(11..) == Some(want))
            .unwrap_or_else(|| panic!("no `{want}`:\n{out}"));
        assert!(stamped(line), "`{line}` has no time:\n{out}");
        assert_eq!(line.len(), 11 + want.len(), "one stamp per line: `{line}`");
    }
    let plain = out.lines().find(|l| l.ends_with("plain")).unwrap();
    assert!(
        out.lines()
            .filter(|l| l.ends_with("plain"))
            .all(|l| l == "plain"),
        "{out}"
    );
    assert_eq!(plain, "plain", "{out}");

    let r = common::run(
        r#"
pipeline {
    agent any
    options { timestamps() }
    stages { stage('S') { steps { echo 'declared' } } }
}
"#,
    )
    .await;
    let out = r.output();
    let line = out.lines().find(|l| l.ends_with("declared")).unwrap();
    assert!(stamped(line), "`{line}`:\n{out}");
}
