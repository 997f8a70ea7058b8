//! Scheduling in a real controller on the fake backend, with commands held until a file
//! exists: a controller at `concurrency: 1024` runs more builds at once than tokio's
//! blocking pool has threads (512), as no build holds a thread for as long as it runs; and
//! a backend's `max_pods` makes a pod wait, in the `queued` phase, for another to end; and
//! a build waiting for its branch (`disableConcurrentBuilds`) holds no slot meanwhile.

mod common;

use std::time::Duration;

use common::{Repo, Server, Sse};

/// More than the 512 threads of tokio's blocking pool.
const BUILDS: usize = 600;

/// Calls of this kind in the fake backend's record.
fn calls(record: &std::path::Path, call: &str) -> usize {
    let tag = format!("\"call\":\"{call}\"");
    std::fs::read_to_string(record)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&tag))
        .count()
}

/// Builds whose held step has started, from the fake backend's record of calls.
fn held_steps(record: &std::path::Path) -> usize {
    std::fs::read_to_string(record)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("\"call\":\"start\"") && l.contains("held until released"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_builds_than_blocking_threads_run_at_once_and_all_finish() {
    let tmp = tempfile::tempdir().unwrap();
    let release = tmp.path().join("release");
    let record = tmp.path().join("calls.jsonl");
    let repo = Repo::new("node {\n  sh 'echo held until released'\n}\n");
    let top = format!(
        "concurrency: 1024\nbackend:\n  kind: fake\n  record: {}\n  hold_until: {}\n",
        record.display(),
        release.display()
    );
    let s = Server::start(&repo, "", &top).await;
    let sha = repo.head();
    // No step ends before the release file exists: once every build's step has started,
    // every build is running at the same time. (The time limit only turns a stall, where
    // builds wait for threads that never free, into a failure.)
    let all_running = async {
        let mut ids = Vec::new();
        for i in 0..BUILDS {
            let r = s.github_push("main", &sha, &format!("many-{i}")).await;
            assert_eq!(r.status, 201, "{}", r.body);
            ids.push(r.json()["build"].as_i64().unwrap());
        }
        while held_steps(&record) < BUILDS {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        ids
    };
    let ids = match tokio::time::timeout(Duration::from_secs(240), all_running).await {
        Ok(ids) => ids,
        Err(_) => {
            let (queued, running) = s.running.as_ref().unwrap().controller.queue_counts();
            panic!(
                "only {} of {BUILDS} builds reached their step at once ({queued} queued, {running} running)",
                held_steps(&record)
            );
        }
    };
    let (queued, running) = s.running.as_ref().unwrap().controller.queue_counts();
    assert_eq!((queued, running), (0, BUILDS));
    std::fs::write(&release, "go").unwrap();
    for id in ids {
        let b = s.wait_finished(id).await;
        assert_eq!(b["result"], "SUCCESS", "{b:#}\n{}", s.log(id).await);
    }
    assert_eq!(held_steps(&record), BUILDS);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_past_max_pods_waits_queued_until_a_pod_ends() {
    let tmp = tempfile::tempdir().unwrap();
    let release = tmp.path().join("release");
    let record = tmp.path().join("calls.jsonl");
    let repo = Repo::new("node {\n  sh 'echo held until released'\n}\n");
    let top = format!(
        "concurrency: 4\nbackend:\n  kind: fake\n  max_pods: 1\n  record: {}\n  hold_until: {}\n",
        record.display(),
        release.display()
    );
    let s = Server::start(&repo, "", &top).await;
    let sha = repo.head();
    let first = s.github_push("main", &sha, "mp-1").await.json()["build"]
        .as_i64()
        .unwrap();
    while held_steps(&record) < 1 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let second = s.github_push("main", &sha, "mp-2").await.json()["build"]
        .as_i64()
        .unwrap();
    let mut sse = Sse::open(s.addr, &format!("/api/builds/{second}/events")).await;
    let mut phases = Vec::new();
    while let Some(ev) = sse.next().await {
        if ev["event"] == "pod_phase" {
            phases.push(ev["phase"].as_str().unwrap_or_default().to_string());
            if ev["phase"] == "queued" {
                break;
            }
        }
    }
    assert_eq!(phases, ["queued"]);
    // The second build runs, its pod asked for; the first build's pod is held, so the
    // second's cannot have a place: it was not provisioned.
    assert_eq!(
        s.get_json(&format!("/api/builds/{second}")).await["status"],
        "running"
    );
    assert_eq!(calls(&record, "provision"), 1);
    std::fs::write(&release, "go").unwrap();
    while let Some(ev) = sse.next().await {
        if ev["event"] == "pod_phase" {
            phases.push(ev["phase"].as_str().unwrap_or_default().to_string());
        }
    }
    assert_eq!(phases[..2], ["queued", "placed"]);
    for id in [first, second] {
        let b = s.wait_finished(id).await;
        assert_eq!(b["result"], "SUCCESS", "{b:#}\n{}", s.log(id).await);
    }
    // In the fake's record, the first pod is torn down before the second is provisioned.
    let order: Vec<String> = std::fs::read_to_string(&record)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["call"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .filter(|c| c == "provision" || c == "teardown")
        .collect();
    assert_eq!(order, ["provision", "teardown", "provision", "teardown"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_waiting_for_its_branch_gives_its_slot_to_another_branch() {
    let tmp = tempfile::tempdir().unwrap();
    let release = tmp.path().join("release");
    let record = tmp.path().join("calls.jsonl");
    let repo = Repo::new(
        "pipeline {\n  agent any\n  options {\n    disableConcurrentBuilds()\n    skipDefaultCheckout()\n  }\n  stages {\n    stage('Only') {\n      steps { sh 'echo held until released' }\n    }\n  }\n}\n",
    );
    let top = format!(
        "concurrency: 2\nbackend:\n  kind: fake\n  record: {}\n  hold_until: {}\n",
        record.display(),
        release.display()
    );
    let s = Server::start(&repo, "", &top).await;
    let sha = repo.head();
    let push = |branch: &'static str, delivery: &'static str| {
        let s = &s;
        let sha = sha.clone();
        async move {
            let r = s.github_push(branch, &sha, delivery).await;
            assert_eq!(r.status, 201, "{}", r.body);
            r.json()["build"].as_i64().unwrap()
        }
    };
    let first = push("main", "turn-1").await;
    let one = async {
        while held_steps(&record) < 1 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(60), one)
        .await
        .is_err()
    {
        let b = s.get_json(&format!("/api/builds/{first}")).await;
        panic!(
            "the first build's step did not start: {b:#}\n{}",
            s.log(first).await
        );
    }
    // Two slots: the first build holds one and main; the second build of main starts in the
    // other, reads its pipeline, and waits for main without its slot; so the build of dev
    // runs now, beside the first. (Were the slot held while waiting, dev would wait for
    // the release, which comes only once dev's step runs: the time limit makes that a
    // failure.)
    let second = push("main", "turn-2").await;
    let dev = push("dev", "turn-3").await;
    let both = async {
        while held_steps(&record) < 2 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(60), both)
        .await
        .is_err()
    {
        let b = s.get_json(&format!("/api/builds/{dev}")).await;
        panic!("the build of dev did not run beside the first: {b:#}");
    }
    let b = s.get_json(&format!("/api/builds/{second}")).await;
    assert_eq!(b["status"], "running", "{b:#}");
    assert_eq!(held_steps(&record), 2);
    std::fs::write(&release, "go").unwrap();
    for id in [first, second, dev] {
        let b = s.wait_finished(id).await;
        assert_eq!(b["result"], "SUCCESS", "{b:#}\n{}", s.log(id).await);
    }
    assert!(
        s.log(second)
            .await
            .contains("Waited for the previous build of this branch"),
        "{}",
        s.log(second).await
    );
    s.stop().await;
}
