//! A controller at `concurrency: 1024` runs more builds at once than tokio's blocking pool
//! has threads (512): no build holds a thread for as long as it runs.

mod common;

use std::time::{Duration, Instant};

use common::{Repo, Server};

/// More than the 512 threads of tokio's blocking pool.
const BUILDS: usize = 600;

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
    let mut ids = Vec::new();
    for i in 0..BUILDS {
        let r = s.github_push("main", &sha, &format!("many-{i}")).await;
        assert_eq!(r.status, 201, "{}", r.body);
        ids.push(r.json()["build"].as_i64().unwrap());
    }
    // No step ends before the release file exists: when every build's step has started,
    // every build is running at the same time. (A deadline only turns a stall into a
    // failure.)
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let held = held_steps(&record);
        if held == BUILDS {
            break;
        }
        let (queued, running) = s.running.as_ref().unwrap().controller.queue_counts();
        assert!(
            Instant::now() < deadline,
            "only {held} of {BUILDS} builds reached their step ({queued} queued, {running} running)"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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
