use super::*;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    s.sync_repos(&[("app".into(), "file:///srv/app".into())])
        .unwrap();
    (dir, s)
}

fn build(delivery: Option<&str>) -> NewBuild {
    NewBuild {
        repo: "app".into(),
        branch: Some("main".into()),
        commit: Some("abc".into()),
        trigger: "github".into(),
        cause: "push to main".into(),
        delivery: delivery.map(str::to_string),
        ..NewBuild::default()
    }
}

#[test]
fn builds_are_numbered_per_repository() {
    let (_d, s) = store();
    s.sync_repos(&[("lib".into(), "/srv/lib".into())]).unwrap();
    let a = s.create_build(&build(None)).unwrap();
    let b = s.create_build(&build(None)).unwrap();
    let c = s
        .create_build(&NewBuild {
            repo: "lib".into(),
            ..build(None)
        })
        .unwrap();
    assert_eq!((a.number, b.number, c.number), (1, 2, 1));
    assert!(matches!(
        s.create_build(&NewBuild {
            repo: "nope".into(),
            ..build(None)
        }),
        Err(StoreError::UnknownRepo(_))
    ));
}

#[test]
fn a_delivery_seen_before_records_nothing() {
    let (_d, s) = store();
    let first = s.create_build(&build(Some("github:1"))).unwrap();
    let again = s.create_build(&build(Some("github:1"))).unwrap();
    assert!(!first.duplicate);
    assert!(again.duplicate);
    assert_eq!(again.id, first.id);
    assert_eq!(s.list_builds(None, 10, None).unwrap().len(), 1);
}

#[test]
fn history_survives_reopening_and_running_builds_fail_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (running, queued) = {
        let s = Store::open(dir.path()).unwrap();
        s.sync_repos(&[("app".into(), "/srv/app".into())]).unwrap();
        let a = s.create_build(&build(None)).unwrap();
        let b = s.create_build(&build(None)).unwrap();
        assert!(s.start_build(a.id).unwrap());
        s.record(
            a.id,
            &Record::StepStarted {
                step_id: 1,
                step: "sh".into(),
                summary: "make".into(),
                job: None,
                branch: None,
                stage: None,
                container: None,
                started_ms: now_ms(),
            },
        )
        .unwrap();
        (a.id, b.id)
    };
    let s = Store::open(dir.path()).unwrap();
    let failed = s.fail_running("controller restarted").unwrap();
    assert_eq!(failed.iter().map(|b| b.id).collect::<Vec<_>>(), [running]);
    let d = s.build_detail(running).unwrap().unwrap();
    assert_eq!(d.build.result.as_deref(), Some("ERROR"));
    assert_eq!(d.build.reason.as_deref(), Some("controller restarted"));
    assert_eq!(d.steps[0].result.as_deref(), Some("ABORTED"));
    let q = s.queued_builds().unwrap();
    assert_eq!(q.iter().map(|b| b.id).collect::<Vec<_>>(), [queued]);
    // A finished build does not change again.
    assert!(!s.finish_build(running, "SUCCESS", None).unwrap());
}

#[test]
fn cancelling_only_touches_queued_builds() {
    let (_d, s) = store();
    let a = s.create_build(&build(None)).unwrap();
    let b = s.create_build(&build(None)).unwrap();
    assert!(s.start_build(b.id).unwrap());
    assert!(s.cancel_queued(a.id, "cancelled").unwrap());
    assert!(!s.cancel_queued(b.id, "cancelled").unwrap());
    assert!(!s.start_build(a.id).unwrap());
    assert_eq!(
        s.get_build(a.id).unwrap().unwrap().result.as_deref(),
        Some("ABORTED")
    );
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    let c = Connection::open(dir.path().join("valet.db")).unwrap();
    c.pragma_update(None, "user_version", 99).unwrap();
    drop(c);
    assert!(matches!(
        Store::open(dir.path()),
        Err(StoreError::TooNew { found: 99, .. })
    ));
}

#[test]
fn step_logs_are_capped_with_a_marker() {
    let (_d, s) = store();
    let id = s.create_build(&build(None)).unwrap().id;
    let mut log = s.build_log(id, 10).unwrap();
    assert_eq!(
        log.append(Some(1), "", "12345").unwrap().as_deref(),
        Some("12345")
    );
    let kept = log.append(Some(1), "", "6789abcdef").unwrap().unwrap();
    assert!(kept.starts_with("6789a\n"), "{kept}");
    assert!(kept.contains(LOG_TRUNCATED_MARKER), "{kept}");
    assert_eq!(log.append(Some(1), "", "EXTRA").unwrap(), None);
    // Another step has its own allowance; prefixes go in the build's log only.
    log.append(Some(2), "[a] ", "x\ny\n").unwrap();
    let (_, truncated) = log.finish_step(1);
    assert!(truncated);
    let step = s.read_step_log(id, 1).unwrap();
    assert!(step.starts_with("123456789a\n"), "{step}");
    assert_eq!(step.matches(LOG_TRUNCATED_MARKER).count(), 1);
    assert!(!step.contains("EXTRA"));
    let all = s.read_log(id).unwrap();
    assert!(all.ends_with("[a] x\n[a] y\n"), "{all}");
    assert_eq!(s.read_step_log(id, 2).unwrap(), "x\ny\n");
}

#[test]
fn events_are_read_back_in_order() {
    let (_d, s) = store();
    let id = s.create_build(&build(None)).unwrap().id;
    let mut log = s.build_log(id, 100).unwrap();
    log.event(r#"{"event":"a"}"#).unwrap();
    log.event(r#"{"event":"b"}"#).unwrap();
    assert_eq!(
        s.read_events(id).unwrap(),
        [r#"{"event":"a"}"#, r#"{"event":"b"}"#]
    );
}

#[test]
fn the_database_file_is_in_wal_mode_with_its_schema_version() {
    let (d, s) = store();
    drop(s);
    // A separate connection to the file on disk: the mode is a property of the file.
    let c = rusqlite::Connection::open(d.path().join("valet.db")).unwrap();
    let mode: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let version: i64 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert!(version >= 1, "migrations ran: version {version}");
}

#[test]
fn the_controllers_lines_are_kept_past_the_builds_own_cap() {
    let (_d, s) = store();
    let id = s.create_build(&build(None)).unwrap().id;
    let mut log = s.build_log(id, 10).unwrap();
    let kept = log.append(None, "", "0123456789abcdef").unwrap().unwrap();
    assert!(kept.contains(LOG_TRUNCATED_MARKER), "{kept}");
    assert_eq!(log.append(None, "", "EXTRA").unwrap(), None);
    assert!(log.line("Finished: SUCCESS").unwrap().is_some());
    let all = s.read_log(id).unwrap();
    assert!(all.ends_with("Finished: SUCCESS\n"), "{all}");
    assert!(!all.contains("EXTRA"), "{all}");
}

#[test]
fn pod_phases_are_kept_per_pod_in_order_and_a_version_1_database_gains_them() {
    let dir = tempfile::tempdir().unwrap();
    // A database as the first schema left it: migration 2 adds the pod phases.
    {
        let mut c = rusqlite::Connection::open(dir.path().join("valet.db")).unwrap();
        let tx = c.transaction().unwrap();
        tx.execute_batch(schema::MIGRATIONS[0]).unwrap();
        tx.pragma_update(None, "user_version", 1).unwrap();
        tx.commit().unwrap();
    }
    let s = Store::open(dir.path()).unwrap();
    s.sync_repos(&[("app".into(), "file:///srv/app".into())])
        .unwrap();
    let b = s.create_build(&build(None)).unwrap();
    let phase = |pod: &str, phase: &str, at_ms: i64, took_ms: i64| Record::PodPhase {
        pod: pod.into(),
        job: format!("job-{pod}"),
        backend: "docker".into(),
        phase: phase.into(),
        at_ms,
        took_ms,
        detail: (phase == "placed").then(|| "warm pod".to_string()),
        recorded_ms: 1_000 + at_ms,
    };
    for r in [
        phase("a", "queued", 100, 0),
        phase("b", "queued", 101, 0),
        phase("a", "placed", 102, 2),
        phase("a", "started", 150, 48),
        phase("b", "placed", 400, 299),
    ] {
        s.record(b.id, &r).unwrap();
    }
    let d = s.build_detail(b.id).unwrap().unwrap();
    let shown: Vec<(String, Vec<(String, i64)>)> = d
        .pods
        .iter()
        .map(|p| {
            (
                p.pod.clone(),
                p.phases
                    .iter()
                    .map(|f| (f.phase.clone(), f.took_ms))
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        shown,
        vec![
            (
                "a".into(),
                vec![
                    ("queued".into(), 0),
                    ("placed".into(), 2),
                    ("started".into(), 48)
                ]
            ),
            (
                "b".into(),
                vec![("queued".into(), 0), ("placed".into(), 299)]
            ),
        ]
    );
    assert_eq!(d.pods[0].job, "job-a");
    assert_eq!(d.pods[0].phases[1].detail.as_deref(), Some("warm pod"));
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

/// The database, its WAL and shared-memory files, the logs and the events are the
/// controller user's alone (0600, directories 0700), whatever the umask allows, and an
/// older store's 0644 files are brought to 0600 when it is opened.
#[test]
fn the_database_logs_and_events_are_private_files() {
    let (d, s) = store();
    let b = s.create_build(&build(None)).unwrap();
    let mut log = s.build_log(b.id, 1024).unwrap();
    log.append(Some(1), "", "hello\n").unwrap();
    log.event("{}").unwrap();
    drop(log);
    let dir = d.path();
    let db = dir.join("valet.db");
    let wal = dir.join("valet.db-wal");
    let shm = dir.join("valet.db-shm");
    // The WAL files exist while the store is open (a write was made).
    for f in [&db, &wal, &shm] {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }
    let logs = s.log_dir(b.id);
    for f in [
        logs.join("log.txt"),
        logs.join("events.jsonl"),
        logs.join("steps").join("1.log"),
    ] {
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }
    for dir in [dir.join("logs"), logs.clone(), logs.join("steps")] {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    }
    drop(s);
    // An older store's readable files.
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let s = Store::open(dir).unwrap();
    assert_eq!(mode(&db), 0o600);
    drop(s);
}
