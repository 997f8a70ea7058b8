//! End to end: a real controller on 127.0.0.1, a real SQLite file, real signed webhooks
//! over TCP, a real git repository checked out with the `git` CLI, pipelines run on the
//! local backend.

mod common;

use common::{GitHttp, Repo, SECRET, Server, Sse, github_push_body, request};
use valet_controller::hooks::hmac_sha256_header;

const GOOD: &str = "\
pipeline {
    agent any
    stages {
        stage('Build') {
            steps {
                sh 'echo building $BRANCH_NAME number $BUILD_NUMBER of $JOB_NAME at $GIT_COMMIT'
            }
        }
        stage('Test') {
            steps {
                echo 'all tests passed'
            }
        }
    }
}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_github_push_runs_to_success_and_the_api_shows_it() {
    let repo = Repo::new(GOOD);
    let sha = repo.head();
    let s = Server::start(&repo, "", "").await;
    let r = s.github_push("main", &sha, "d-1").await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["build"].as_i64().unwrap();
    // The answer came after the record was committed: it is already listed.
    let listed = s.builds().await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], id);

    let b = s.wait_finished(id).await;
    assert_eq!(b["result"], "SUCCESS", "{b:#}\n{}", s.log(id).await);
    assert_eq!(b["repo"], "org/app");
    assert_eq!(b["number"], 1);
    assert_eq!(b["commit"], sha.as_str());
    assert_eq!(b["trigger"], "github");
    let stages: Vec<&str> = b["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(stages, ["Build", "Test"], "{b:#}");
    assert!(
        b["stages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["result"] == "SUCCESS" && s["duration_ms"].is_i64())
    );
    let sh = b["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "sh")
        .expect("an sh step");
    assert_eq!(sh["result"], "SUCCESS");
    assert_eq!(sh["stage"], "Build");
    assert!(sh["duration_ms"].is_i64());
    assert!(!b["jobs"].as_array().unwrap().is_empty(), "{b:#}");
    let log = s.log(id).await;
    assert!(
        log.contains(&format!("building main number 1 of org/app at {sha}")),
        "{log}"
    );
    assert!(log.contains("all tests passed"), "{log}");
    // The step's own log.
    let step_log = s
        .get(&format!("/api/builds/{id}/steps/{}/log", sh["id"]))
        .await;
    assert!(step_log.body.contains("building main"), "{}", step_log.body);
    // Metrics count it.
    let m = s.get("/metrics").await.body;
    assert!(
        m.contains("valet_builds_total{result=\"SUCCESS\"} 1"),
        "{m}"
    );
    assert!(m.contains("valet_pod_ready_seconds_count 1"), "{m}");
    assert!(m.contains("valet_step_duration_seconds_count"), "{m}");
    // The next build of the repository is number 2.
    let r = s.github_push("main", &sha, "d-2").await;
    assert_eq!(r.json()["number"], 2);
    s.wait_finished(r.json()["build"].as_i64().unwrap()).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_pipeline_gives_failure_with_the_steps_output() {
    let repo = Repo::new(
        "node {\n  stage('Compile') {\n    sh 'echo compiler says: missing semicolon >&2; exit 3'\n  }\n  stage('Never') { echo 'not here' }\n}\n",
    );
    let s = Server::start(&repo, "", "").await;
    let r = s.github_push("main", &repo.head(), "f-1").await;
    let id = r.json()["build"].as_i64().unwrap();
    let b = s.wait_finished(id).await;
    assert_eq!(b["result"], "FAILURE", "{b:#}");
    assert!(
        b["reason"].as_str().unwrap_or("").contains("exit code 3"),
        "{b:#}"
    );
    let log = s.log(id).await;
    assert!(log.contains("compiler says: missing semicolon"), "{log}");
    assert!(!log.contains("not here"), "{log}");
    let sh = b["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "sh")
        .unwrap();
    assert_eq!(sh["result"], "FAILURE");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signatures_are_refused_and_store_nothing() {
    let repo = Repo::new(GOOD);
    let s = Server::start(&repo, "", "").await;
    let body = github_push_body("main", &repo.head());
    let wrong = hmac_sha256_header(b"not the secret", body.as_bytes());
    for headers in [
        vec![
            ("X-GitHub-Event", "push"),
            ("X-Hub-Signature-256", wrong.as_str()),
        ],
        vec![("X-GitHub-Event", "push")],
        vec![
            ("X-GitHub-Event", "push"),
            ("X-Hub-Signature-256", "sha256=zz"),
        ],
    ] {
        let r = s.post("/hooks/github", &headers, body.as_bytes()).await;
        assert_eq!(r.status, 401, "{headers:?}: {}", r.body);
    }
    // The signature of another body does not pass either.
    let other = hmac_sha256_header(SECRET.as_bytes(), b"{}");
    let r = s
        .post(
            "/hooks/github",
            &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &other)],
            body.as_bytes(),
        )
        .await;
    assert_eq!(r.status, 401);
    // GitLab with a wrong token, generic with a wrong HMAC.
    let gl = gitlab_push_body(&repo.head());
    let r = s
        .post(
            "/hooks/gitlab",
            &[("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Token", "nope")],
            gl.as_bytes(),
        )
        .await;
    assert_eq!(r.status, 401);
    let g = r#"{"repository":"org/app","branch":"main"}"#;
    let r = s
        .post(
            "/hooks/generic",
            &[("X-Valet-Signature-256", &wrong)],
            g.as_bytes(),
        )
        .await;
    assert_eq!(r.status, 401);
    assert!(s.builds().await.is_empty());
    assert!(
        s.get("/metrics")
            .await
            .body
            .contains("outcome=\"unauthorized\"} 6")
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_delivery_twice_makes_one_build() {
    let repo = Repo::new(GOOD);
    let s = Server::start(&repo, "", "").await;
    let first = s.github_push("main", &repo.head(), "same-id").await;
    let again = s.github_push("main", &repo.head(), "same-id").await;
    assert_eq!(first.status, 201);
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.json()["status"], "duplicate");
    assert_eq!(again.json()["build"], first.json()["build"]);
    assert_eq!(s.builds().await.len(), 1);
    s.wait_finished(first.json()["build"].as_i64().unwrap())
        .await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_25_mib_is_refused_with_413() {
    let repo = Repo::new(GOOD);
    let s = Server::start(&repo, "", "").await;
    let body = vec![b' '; 26 * 1024 * 1024];
    let sig = hmac_sha256_header(SECRET.as_bytes(), &body);
    let r = request(
        s.addr,
        "POST",
        "/hooks/github",
        &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &sig)],
        &body,
    )
    .await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(s.builds().await.is_empty());
    s.stop().await;
}

/// A chunked body (no declared length) is counted as it arrives: a small one is read and
/// builds, one past 25 MiB is refused with 413 and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_bodies_are_counted_as_they_arrive() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    async fn chunked(addr: std::net::SocketAddr, sig: &str, body: &[u8]) -> String {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut rd, mut wr) = stream.into_split();
        let mut out = format!(
            "POST /hooks/github HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-GitHub-Event: push\r\nX-GitHub-Delivery: chunked-{}\r\nX-Hub-Signature-256: {sig}\r\nTransfer-Encoding: chunked\r\n\r\n",
            body.len()
        )
        .into_bytes();
        for piece in body.chunks(1024 * 1024) {
            out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            out.extend_from_slice(piece);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
        let writer = tokio::spawn(async move {
            let _ = wr.write_all(&out).await;
            wr
        });
        let mut raw = Vec::new();
        let _ = rd.read_to_end(&mut raw).await;
        drop(writer);
        String::from_utf8_lossy(&raw).into_owned()
    }
    let repo = Repo::new(GOOD);
    let s = Server::start(&repo, "", "").await;
    let body = github_push_body("main", &repo.head());
    let sig = hmac_sha256_header(SECRET.as_bytes(), body.as_bytes());
    let answer = chunked(s.addr, &sig, body.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    let huge = vec![b' '; 26 * 1024 * 1024];
    let sig = hmac_sha256_header(SECRET.as_bytes(), &huge);
    let answer = chunked(s.addr, &sig, &huge).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("over 25 MiB"), "{answer}");
    assert_eq!(s.builds().await.len(), 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_syntax_error_ends_in_error_with_the_diagnostic_in_the_log() {
    let repo = Repo::new("node {\n  stage('A') {\n    sh 'echo hi'\n  }\n  echo 'x' +\n}\n");
    let s = Server::start(&repo, "", "").await;
    let r = s.github_push("main", &repo.head(), "syn-1").await;
    let id = r.json()["build"].as_i64().unwrap();
    let b = s.wait_finished(id).await;
    assert_eq!(b["result"], "ERROR", "{b:#}");
    assert!(
        b["reason"]
            .as_str()
            .unwrap()
            .contains("the pipeline is invalid"),
        "{b:#}"
    );
    let log = s.log(id).await;
    // file:line:column of the problem.
    assert!(log.contains("Jenkinsfile:5:13"), "{log}");
    assert!(b["steps"].as_array().unwrap().is_empty());
    s.stop().await;
}

fn gitlab_push_body(sha: &str) -> String {
    serde_json::json!({
        "object_kind": "push",
        "ref": "refs/heads/main",
        "checkout_sha": sha,
        "project": {"name": "app", "path_with_namespace": "org/app"},
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitlab_tokens_and_generic_hmac_start_builds() {
    let repo = Repo::new(
        "node { sh 'echo gitlab-or-generic $BRANCH_NAME size=$SIZE' ; echo \"param ${params.SIZE}\" }\n",
    );
    let s = Server::start(&repo, "", "").await;
    let gl = gitlab_push_body(&repo.head());
    let r = s
        .post(
            "/hooks/gitlab",
            &[
                ("X-Gitlab-Event", "Push Hook"),
                ("X-Gitlab-Token", SECRET),
                ("X-Gitlab-Event-UUID", "gl-1"),
            ],
            gl.as_bytes(),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let gl_id = r.json()["build"].as_i64().unwrap();
    let g = format!(
        r#"{{"repository":"org/app","branch":"main","commit":"{}","parameters":{{"SIZE":"large"}}}}"#,
        repo.head()
    );
    let sig = hmac_sha256_header(SECRET.as_bytes(), g.as_bytes());
    let headers = [
        ("X-Valet-Signature-256", sig.as_str()),
        ("Idempotency-Key", "gen-1"),
    ];
    let r = s.post("/hooks/generic", &headers, g.as_bytes()).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let gen_id = r.json()["build"].as_i64().unwrap();
    // The idempotency key de-duplicates generic deliveries too.
    let again = s.post("/hooks/generic", &headers, g.as_bytes()).await;
    assert_eq!(again.json()["build"], gen_id);
    for id in [gl_id, gen_id] {
        let b = s.wait_finished(id).await;
        assert_eq!(b["result"], "SUCCESS", "{b:#}\n{}", s.log(id).await);
    }
    assert_eq!(
        s.get_json(&format!("/api/builds/{gl_id}")).await["trigger"],
        "gitlab"
    );
    assert!(s.log(gl_id).await.contains("gitlab-or-generic main"));
    assert!(
        s.log(gen_id).await.contains("param large"),
        "{}",
        s.log(gen_id).await
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignored_deliveries_and_unknown_repositories_are_202_without_a_build() {
    let repo = Repo::new(GOOD);
    let s = Server::start(
        &repo,
        "    branches: [main]\n",
        &format!("webhook_secret: \"{SECRET}\"\n"),
    )
    .await;
    let head = repo.head();
    // A branch outside the filter.
    let r = s.github_push("feature/x", &head, "i-1").await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert!(
        r.json()["reason"]
            .as_str()
            .unwrap()
            .contains("branch filter")
    );
    // An unknown repository.
    let body = github_push_body("main", &head)
        .replace("org/app", "org/other")
        .replace("\"app\"", "\"other\"");
    let sig = hmac_sha256_header(SECRET.as_bytes(), body.as_bytes());
    let r = s
        .post(
            "/hooks/github",
            &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &sig)],
            body.as_bytes(),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert!(
        r.json()["reason"]
            .as_str()
            .unwrap()
            .contains("unknown repository")
    );
    // An event that does not build.
    let body = r#"{"zen":"Keep it logically awesome.","repository":{"full_name":"org/app"}}"#;
    let sig = hmac_sha256_header(SECRET.as_bytes(), body.as_bytes());
    let r = s
        .post(
            "/hooks/github",
            &[("X-GitHub-Event", "ping"), ("X-Hub-Signature-256", &sig)],
            body.as_bytes(),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    // Malformed JSON with a signature: 400.
    let sig = hmac_sha256_header(SECRET.as_bytes(), b"{nope");
    let r = s
        .post(
            "/hooks/github",
            &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &sig)],
            b"{nope",
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(s.builds().await.is_empty());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_stream_a_running_build() {
    let repo = Repo::new(
        "node {\n  stage('Slow') {\n    sh 'echo first-line; sleep 3; echo second-line'\n  }\n}\n",
    );
    let s = Server::start(&repo, "", "").await;
    let r = s.github_push("main", &repo.head(), "sse-1").await;
    let id = r.json()["build"].as_i64().unwrap();
    let mut sse = Sse::open(s.addr, &format!("/api/builds/{id}/events")).await;
    assert!(sse.headers.contains("text/event-stream"), "{}", sse.headers);
    let mut kinds = Vec::new();
    let mut saw_first_while_running = false;
    while let Some(ev) = sse.next().await {
        let kind = ev["event"].as_str().unwrap_or_default().to_string();
        if kind == "output"
            && ev["text"]
                .as_str()
                .unwrap_or_default()
                .contains("first-line")
        {
            // Live: the build is still running when its first line arrives.
            let b = s.get_json(&format!("/api/builds/{id}")).await;
            saw_first_while_running = b["status"] == "running";
        }
        kinds.push(kind);
    }
    assert!(saw_first_while_running, "{kinds:?}");
    for k in [
        "build_status",
        "build_started",
        "stage_started",
        "step_started",
        "step_finished",
        "build_finished",
    ] {
        assert!(kinds.iter().any(|x| x == k), "{k} missing from {kinds:?}");
    }
    assert_eq!(kinds.last().map(String::as_str), Some("build_status"));
    // A late subscriber gets the whole story from the start.
    let mut late = Sse::open(s.addr, &format!("/api/builds/{id}/events")).await;
    let mut n = 0;
    while let Some(ev) = late.next().await {
        n += 1;
        if n == 1 {
            assert_eq!(ev["status"], "running", "{ev}");
        }
    }
    assert_eq!(n, kinds.len());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_build_aborts_it() {
    let repo = Repo::new("node {\n  stage('Long') {\n    sh 'echo started; sleep 60'\n  }\n}\n");
    let s = Server::start(&repo, "", "").await;
    // A name with a slash is percent-encoded in the path.
    let r = s.post("/api/repos/org%2Fapp/builds", &[], b"{}").await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["build"].as_i64().unwrap();
    // Wait until the step runs.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !s.log(id).await.contains("started") {
        assert!(std::time::Instant::now() < deadline, "{}", s.log(id).await);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let c = s.post(&format!("/api/builds/{id}/cancel"), &[], b"").await;
    assert_eq!(c.status, 202, "{}", c.body);
    let b = s.wait_finished(id).await;
    assert_eq!(b["result"], "ABORTED", "{b:#}");
    assert_eq!(b["reason"], "cancelled through the API (token `tests`)");
    // A finished build cannot be cancelled; an unknown one is 404.
    assert_eq!(
        s.post(&format!("/api/builds/{id}/cancel"), &[], b"")
            .await
            .status,
        409
    );
    assert_eq!(s.post("/api/builds/999/cancel", &[], b"").await.status, 404);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_request_builds_its_head_fetched_from_the_pull_ref() {
    let repo = Repo::new(GOOD);
    let main = repo.head();
    // The pull request's commit is on no branch of the repository, only on refs/pull/7/head,
    // as on GitHub for a pull request from a fork.
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
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
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    git(&["checkout", "--quiet", "-b", "feature"]);
    let head = repo.commit(
        "Jenkinsfile",
        "node { sh 'echo pull request build of $BRANCH_NAME change $CHANGE_ID' }\n",
    );
    git(&["checkout", "--quiet", "main"]);
    git(&["update-ref", "refs/pull/7/head", &head]);
    git(&["branch", "--quiet", "-D", "feature"]);
    assert_ne!(head, main);
    let s = Server::start(&repo, "    branches: [main]\n", "").await;
    let body = serde_json::json!({
        "action": "opened",
        "number": 7,
        "pull_request": {"head": {"ref": "feature", "sha": head}, "base": {"ref": "main"}},
        "repository": {"name": "app", "full_name": "org/app"},
    })
    .to_string();
    let sig = hmac_sha256_header(SECRET.as_bytes(), body.as_bytes());
    let r = s
        .post(
            "/hooks/github",
            &[
                ("X-GitHub-Event", "pull_request"),
                ("X-Hub-Signature-256", &sig),
                ("X-GitHub-Delivery", "pr-1"),
            ],
            body.as_bytes(),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["build"].as_i64().unwrap();
    let b = s.wait_finished(id).await;
    assert_eq!(b["result"], "SUCCESS", "{b:#}\n{}", s.log(id).await);
    assert_eq!(b["branch"], "PR-7");
    assert_eq!(b["commit"], head.as_str());
    let log = s.log(id).await;
    assert!(log.contains("pull request build of PR-7 change 7"), "{log}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_concurrent_builds_runs_a_branch_one_build_at_a_time() {
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("order.txt");
    // Steps of a controller running as root run as `nobody`: the file is theirs to append to.
    std::fs::write(&file, "").unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
    }
    let repo = Repo::new(&format!(
        "pipeline {{\n  agent any\n  options {{ disableConcurrentBuilds() }}\n  stages {{\n    stage('Only') {{\n      steps {{ sh 'echo start >> {0}; sleep 1; echo end >> {0}' }}\n    }}\n  }}\n}}\n",
        file.display()
    ));
    let s = Server::start(&repo, "", "concurrency: 4\n").await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let r = s
            .github_push("main", &repo.head(), &format!("dcb-{i}"))
            .await;
        ids.push(r.json()["build"].as_i64().unwrap());
    }
    for id in ids {
        let b = s.wait_finished(id).await;
        assert_eq!(b["result"], "SUCCESS", "{b:#}\n{}", s.log(id).await);
    }
    let order = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        order,
        "start\nend\n".repeat(3),
        "builds overlapped:\n{order}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_triggers_with_parameters_and_the_read_api() {
    let repo = Repo::new(
        "node {\n  stage('Check') {\n    echo \"target ${params.TARGET} dry ${params.DRY_RUN}\"\n    unstable('flaky tests')\n  }\n}\n",
    );
    let s = Server::start(&repo, "", "").await;
    let repos = s.get_json("/api/repos").await;
    assert_eq!(repos["repositories"][0]["name"], "org/app");
    assert!(repos["repositories"][0].get("secret").is_none(), "{repos}");
    assert_eq!(s.get_json("/healthz").await["status"], "ok");
    // Bad calls change nothing.
    let bad = [
        (
            "/api/repos/org%2Fapp/builds",
            r#"{"branch":"main","colour":"red"}"#,
            400,
        ),
        (
            "/api/repos/org%2Fapp/builds",
            r#"{"parameters":{"A":{"b":1}}}"#,
            400,
        ),
        (
            "/api/repos/org%2Fapp/builds",
            r#"{"commit":"--upload-pack=x"}"#,
            400,
        ),
        ("/api/repos/nope/builds", "{}", 404),
    ];
    for (path, body, status) in bad {
        let r = s.post(path, &[], body.as_bytes()).await;
        assert_eq!(r.status, status, "{path} {body}: {}", r.body);
        assert!(r.json()["error"].is_string());
    }
    assert!(s.builds().await.is_empty());
    let body = r#"{"branch":"main","parameters":{"TARGET":"staging","DRY_RUN":true}}"#;
    let key = [("Idempotency-Key", "by-hand-1")];
    let r = s
        .post("/api/repos/org%2Fapp/builds", &key, body.as_bytes())
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["build"].as_i64().unwrap();
    let again = s
        .post("/api/repos/org%2Fapp/builds", &key, body.as_bytes())
        .await;
    assert_eq!(
        (again.status, again.json()["build"].as_i64()),
        (200, Some(id))
    );
    let b = s.wait_finished(id).await;
    assert_eq!(b["result"], "UNSTABLE", "{b:#}");
    assert_eq!(b["trigger"], "manual");
    assert_eq!(b["params"]["TARGET"], "staging");
    assert_eq!(
        b["commit"],
        repo.head().as_str(),
        "the commit checked out is recorded"
    );
    assert!(s.log(id).await.contains("target staging dry true"));
    let mine = s.get_json("/api/builds?repo=org%2Fapp").await;
    assert_eq!(mine["builds"].as_array().unwrap().len(), 1);
    let other = s.get_json("/api/builds?repo=other").await;
    assert!(other["builds"].as_array().unwrap().is_empty());
    assert_eq!(s.get("/api/builds/9999").await.status, 404);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_is_not_there_ends_in_error_checkout_failed() {
    let repo = Repo::new(GOOD);
    let s = Server::start(&repo, "", "").await;
    let missing = "0123456789abcdef0123456789abcdef01234567";
    let r = s.github_push("main", missing, "missing-1").await;
    let id = r.json()["build"].as_i64().unwrap();
    let b = s.wait_finished(id).await;
    assert_eq!(b["result"], "ERROR", "{b:#}");
    let reason = b["reason"].as_str().unwrap();
    assert!(reason.starts_with("checkout failed"), "{reason}");
    assert!(s.log(id).await.contains("checkout failed"));
    // The build's directory is gone, its log stays.
    assert!(!s.data_dir().join("builds").join(id.to_string()).exists());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steps_output_is_capped_with_a_marker() {
    let repo = Repo::new(
        "node {\n  sh 'for i in $(seq 1 500); do echo line-$i-xxxxxxxxxxxxxxxx; done'\n  sh 'echo after-the-flood'\n}\n",
    );
    let s = Server::start(&repo, "", "step_log_limit: 1024\n").await;
    let r = s.github_push("main", &repo.head(), "cap-1").await;
    let id = r.json()["build"].as_i64().unwrap();
    let b = s.wait_finished(id).await;
    assert_eq!(b["result"], "SUCCESS", "{b:#}");
    let steps = b["steps"].as_array().unwrap();
    let flood = steps
        .iter()
        .find(|s| s["summary"].as_str().unwrap().contains("seq"))
        .unwrap();
    assert_eq!(flood["log_truncated"], true, "{flood:#}");
    let log = s.log(id).await;
    assert_eq!(log.matches("[valet: log truncated:").count(), 1, "{log}");
    assert!(!log.contains("line-500-"), "{log}");
    assert!(log.contains("after-the-flood"), "{log}");
    s.stop().await;
}

/// Output arrives in pieces; the log holds whole lines: parallel branches writing at the
/// same time, and a step that ends without a newline, do not run into each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_keeps_lines_whole_across_parallel_branches() {
    let repo = Repo::new(
        "node {\n  parallel(\n    a: { sh 'printf \"a-one \"; sleep 0.4; printf \"a-two\\\\n\"' },\n    b: { sh 'sleep 0.2; printf \"b-one \"; sleep 0.4; echo b-two' }\n  )\n  sh 'printf no-newline-at-the-end'\n  sh 'echo next-step'\n}\n",
    );
    let s = Server::start(&repo, "", "").await;
    let r = s.github_push("main", &repo.head(), "lines-1").await;
    let id = r.json()["build"].as_i64().unwrap();
    let b = s.wait_finished(id).await;
    let log = s.log(id).await;
    assert_eq!(b["result"], "SUCCESS", "{b:#}\n{log}");
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.contains(&"[a] a-one a-two"), "{log}");
    assert!(lines.contains(&"[b] b-one b-two"), "{log}");
    assert!(lines.contains(&"no-newline-at-the-end"), "{log}");
    assert!(lines.contains(&"next-step"), "{log}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_queued_build_aborts_it_before_it_starts() {
    let repo = Repo::new("node { sh 'sleep 2' }\n");
    let s = Server::start(&repo, "", "concurrency: 1\n").await;
    let first = s.github_push("main", &repo.head(), "q-1").await.json()["build"]
        .as_i64()
        .unwrap();
    let second = s.github_push("main", &repo.head(), "q-2").await.json()["build"]
        .as_i64()
        .unwrap();
    assert_eq!(
        s.get_json(&format!("/api/builds/{second}")).await["status"],
        "queued"
    );
    let c = s
        .post(&format!("/api/builds/{second}/cancel"), &[], b"")
        .await;
    assert_eq!(c.status, 200, "{}", c.body);
    assert_eq!(c.json()["status"], "cancelled");
    let b = s.get_json(&format!("/api/builds/{second}")).await;
    assert_eq!(
        (b["result"].as_str(), b["started_ms"].is_null()),
        (Some("ABORTED"), true)
    );
    assert_eq!(s.wait_finished(first).await["result"], "SUCCESS");
    // It never ran.
    assert!(
        s.get_json(&format!("/api/builds/{second}")).await["steps"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_triggers_and_stores_nothing() {
    let repo = Repo::new("node { sh 'sleep 2' }\n");
    let s = Server::start(&repo, "", "concurrency: 1\nmax_queued: 1\n").await;
    let first = s.github_push("main", &repo.head(), "full-1").await;
    assert_eq!(first.status, 201, "{}", first.body);
    // The first runs (or is about to); one may wait.
    s.wait_status(first.json()["build"].as_i64().unwrap(), "running")
        .await;
    assert_eq!(
        s.github_push("main", &repo.head(), "full-2").await.status,
        201
    );
    let refused = s.github_push("main", &repo.head(), "full-3").await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(
        refused.json()["error"]
            .as_str()
            .unwrap()
            .contains("queue is full")
    );
    assert_eq!(s.builds().await.len(), 2);
    s.stop().await;
}

/// A clone URL with a token: the build clones through it (the git server sees the
/// credentials), yet no file of the data directory holds the token (the SQLite database
/// and its WAL included, read as bytes), the API shows the URL redacted, and every file the
/// store writes is 0600.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_token_reaches_git_but_no_file_of_the_data_dir_nor_the_api() {
    const TOKEN: &str = "ghp_T0kenThatMustNotBeStored42";
    let repo = Repo::new("node {\n  sh 'echo built; git remote -v || true'\n}\n");
    let server = GitHttp::serve(&repo, "x-access-token", TOKEN);
    let s = Server::start_url(&server.url_with("x-access-token", TOKEN), "", "").await;
    let r = s.github_push("main", &repo.head(), "token-1").await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["build"].as_i64().unwrap();
    let b = s.wait_finished(id).await;
    assert_eq!(b["result"], "SUCCESS", "{b:#}\n{}", s.log(id).await);
    assert!(
        server.authorized.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "git never sent the credentials"
    );
    let log = s.log(id).await;
    assert!(log.contains("built"), "{log}");
    let repos = s.get_json("/api/repos").await.to_string();
    assert!(!repos.contains(TOKEN) && repos.contains("***@"), "{repos}");
    // Every byte of every file, the database and its WAL included, while the controller
    // is still running (nothing has been checkpointed away).
    let mut files = Vec::new();
    let mut stack = vec![s.data_dir()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            files.push(p);
        }
    }
    assert!(
        files.len() >= 4,
        "the database, its WAL and the logs: {files:?}"
    );
    for p in &files {
        let bytes = std::fs::read(p).unwrap();
        assert!(
            !bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
            "{} holds the token",
            p.display()
        );
    }
    for p in &files {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", p.display());
    }
    s.stop().await;
}

/// Refs and branches git itself refuses (`git check-ref-format`) are refused with a JSON
/// 400 naming the rule, from webhooks and from the trigger API alike, and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refs_git_refuses_are_refused_by_hooks_and_the_api_and_nothing_is_stored() {
    let repo = Repo::new(GOOD);
    let s = Server::start(&repo, "", "").await;
    let head = repo.head();
    let bad = [
        "",
        "a//b",
        "x.lock",
        "a..b",
        "a@{1}",
        "a\u{1}b",
        "trailing/",
        "trailing.",
        "-dash",
        ".hidden",
    ];
    for (i, branch) in bad.iter().enumerate() {
        // A push of `refs/heads/<branch>`.
        let r = s.github_push(branch, &head, &format!("bad-ref-{i}")).await;
        assert_eq!(r.status, 400, "push of {branch:?}: {}", r.body);
        let e = r.json()["error"].as_str().unwrap().to_string();
        assert!(
            e.contains("not a valid git ref") || e.contains("not a valid branch name"),
            "{branch:?}: {e}"
        );
        if branch.is_empty() {
            continue;
        }
        // A build by hand of that branch.
        let body = serde_json::json!({ "branch": branch }).to_string();
        let r = s
            .post("/api/repos/org%2Fapp/builds", &[], body.as_bytes())
            .await;
        assert_eq!(r.status, 400, "trigger of {branch:?}: {}", r.body);
        let e = r.json()["error"].as_str().unwrap().to_string();
        assert!(e.contains("not a valid branch name"), "{branch:?}: {e}");
        // And through the generic hook.
        let body = serde_json::json!({ "repository": "org/app", "branch": branch }).to_string();
        let sig = hmac_sha256_header(SECRET.as_bytes(), body.as_bytes());
        let r = s
            .post(
                "/hooks/generic",
                &[("X-Valet-Signature-256", &sig)],
                body.as_bytes(),
            )
            .await;
        assert_eq!(r.status, 400, "generic hook of {branch:?}: {}", r.body);
    }
    let e = s
        .github_push("x.lock", &head, "bad-ref-lock-again")
        .await
        .json()["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(e.contains("ends with `.lock`"), "{e}");
    assert!(s.builds().await.is_empty());
    // A good name still builds.
    let ok = s.github_push("feature/ok", &head, "good-ref").await;
    assert_eq!(ok.status, 201, "{}", ok.body);
    s.stop().await;
}

/// `max_queued` holds exactly under a burst: 50 triggers at once (webhooks and the API,
/// each on its own connection) while the one slot is busy give 5 builds and 45 refusals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_triggers_against_max_queued_5_record_exactly_5() {
    let repo = Repo::new("node { sh 'sleep 60' }\n");
    let s = Server::start(&repo, "", "concurrency: 1\nmax_queued: 5\n").await;
    let first = s.github_push("main", &repo.head(), "burst-0").await;
    assert_eq!(first.status, 201, "{}", first.body);
    let first = first.json()["build"].as_i64().unwrap();
    s.wait_status(first, "running").await;
    let head = repo.head();
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(50));
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (addr, head, start) = (s.addr, head.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            if i % 2 == 0 {
                let body = github_push_body("main", &head);
                let sig = hmac_sha256_header(SECRET.as_bytes(), body.as_bytes());
                let delivery = format!("burst-{}", i + 1);
                request(
                    addr,
                    "POST",
                    "/hooks/github",
                    &[
                        ("X-GitHub-Event", "push"),
                        ("X-GitHub-Delivery", &delivery),
                        ("X-Hub-Signature-256", &sig),
                    ],
                    body.as_bytes(),
                )
                .await
            } else {
                request(addr, "POST", "/api/repos/org%2Fapp/builds", &[], b"{}").await
            }
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    let accepted = answers.iter().filter(|r| r.status == 201).count();
    assert_eq!(accepted, 5);
    for r in answers.iter().filter(|r| r.status != 201) {
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(
            r.json()["error"]
                .as_str()
                .unwrap()
                .contains("queue is full"),
            "{}",
            r.body
        );
        assert!(r.headers.to_ascii_lowercase().contains("retry-after"));
    }
    let builds = s.builds().await;
    assert_eq!(builds.len(), 6, "the running one and 5 waiting");
    assert_eq!(builds.iter().filter(|b| b["status"] == "queued").count(), 5);
    // Once the queue is full no later trigger gets in either.
    assert_eq!(s.github_push("main", &head, "burst-late").await.status, 503);
    for b in &builds {
        let id = b["id"].as_i64().unwrap();
        s.post(&format!("/api/builds/{id}/cancel"), &[], b"").await;
    }
    s.wait_finished(first).await;
    s.stop().await;
}

/// The read API answers every malformed or out-of-range request in JSON with the right
/// status: a build id that is not a number, a step the build does not have, a resume point
/// past every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_api_requests_get_json_errors_and_resume_points_do_not_wrap() {
    let repo = Repo::new("node {\n  sh 'echo one'\n}\n");
    let s = Server::start(&repo, "", "").await;
    let r = s.github_push("main", &repo.head(), "api-1").await;
    let id = r.json()["build"].as_i64().unwrap();
    s.wait_finished(id).await;
    for path in [
        "/api/builds/abc".to_string(),
        "/api/builds/abc/log".to_string(),
        format!("/api/builds/{id}/steps/x/log"),
    ] {
        let r = s.get(&path).await;
        assert_eq!(r.status, 400, "{path}: {r:?}");
        assert!(
            r.headers.contains("application/json"),
            "{path}: {}",
            r.headers
        );
        assert!(r.json()["error"].is_string(), "{path}");
    }
    let r = s.get(&format!("/api/builds/{id}/steps/999/log")).await;
    assert_eq!(r.status, 404, "{r:?}");
    assert!(r.json()["error"].as_str().unwrap().contains("no step 999"));
    // A Last-Event-ID at the top of the range resumes after it: nothing, not everything.
    let r = request(
        s.addr,
        "GET",
        &format!("/api/builds/{id}/events"),
        &[("Last-Event-ID", "18446744073709551615")],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(!r.body.contains("data:"), "events replayed: {}", r.body);
    let all = request(s.addr, "GET", &format!("/api/builds/{id}/events"), &[], b"").await;
    assert!(all.body.contains("data:"), "{}", all.body);
    s.stop().await;
}

/// Whether a repository is configured cannot be probed: without the shared webhook secret, a
/// delivery for an unknown repository gets exactly what a wrongly signed delivery for a
/// configured one gets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_known_repositories_answer_alike_to_a_wrong_signature() {
    let repo = Repo::new(GOOD);
    for top in ["", "webhook_secret: \"shared-secret\"\n"] {
        let s = Server::start(&repo, "", top).await;
        let head = repo.head();
        let known = github_push_body("main", &head);
        let unknown = known
            .replace("org/app", "org/other")
            .replace("\"app\"", "\"other\"");
        let mut answers = Vec::new();
        for body in [&known, &unknown] {
            let sig = hmac_sha256_header(b"a guess", body.as_bytes());
            let r = s
                .post(
                    "/hooks/github",
                    &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &sig)],
                    body.as_bytes(),
                )
                .await;
            answers.push((r.status, r.body));
        }
        assert_eq!(answers[0].0, 401, "{answers:?}");
        assert_eq!(answers[0], answers[1], "with `{top}`");
        assert!(s.builds().await.is_empty());
        s.stop().await;
    }
}

/// A step printing many short lines (the cheapest way to make events large) costs the
/// events file a small multiple of the log, not one JSON object per line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_many_short_lines_stay_a_small_multiple_of_the_log() {
    let repo = Repo::new("node {\n  sh 'yes x | head -n 500000'\n}\n");
    let s = Server::start(&repo, "", "").await;
    let r = s.github_push("main", &repo.head(), "short-1").await;
    let id = r.json()["build"].as_i64().unwrap();
    let b = s.wait_finished(id).await;
    assert_eq!(b["result"], "SUCCESS", "{b:#}");
    let logs = s.data_dir().join("logs").join(id.to_string());
    let size = |name: &str| {
        std::fs::metadata(logs.join(name))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    let log = size("log.txt");
    let events = size("events.jsonl");
    assert!(log >= 1_000_000, "the log holds the lines: {log} bytes");
    assert!(
        events <= 3 * log,
        "events.jsonl is {events} bytes for a log of {log}"
    );
    s.stop().await;
}

/// The data directory (database, logs, checkouts) is closed to other users, whatever mode it
/// was made with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_is_closed_to_other_users() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let yaml = format!(
        "listen: 127.0.0.1:0\ndata_dir: {}\nrepositories: []\n",
        data.display()
    );
    let config =
        valet_controller::Config::parse(std::path::Path::new("valet.yaml"), &yaml, dir.path())
            .unwrap();
    let running = valet_controller::Controller::start(config).await.unwrap();
    let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
    running.shutdown(std::time::Duration::from_secs(1)).await;
    assert_eq!(mode, 0o700, "{mode:o}");
}
