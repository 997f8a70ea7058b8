//! The schema and its migrations. `PRAGMA user_version` is the version; each migration
//! runs once, in order, in one transaction with the version bump. A database newer than
//! this binary is refused rather than guessed at.

use std::path::Path;

use rusqlite::Connection;

use crate::StoreError;

/// Migration `i` takes the schema from version `i` to `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "CREATE TABLE repos (
        name TEXT PRIMARY KEY,
        url TEXT NOT NULL,
        next_number INTEGER NOT NULL DEFAULT 1
     );
     CREATE TABLE builds (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        repo TEXT NOT NULL REFERENCES repos(name),
        number INTEGER NOT NULL,
        branch TEXT,
        commit_sha TEXT,
        git_ref TEXT,
        trigger TEXT NOT NULL,
        cause TEXT NOT NULL DEFAULT '',
        params TEXT NOT NULL DEFAULT '{}',
        status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'finished')),
        result TEXT,
        reason TEXT,
        created_ms INTEGER NOT NULL,
        started_ms INTEGER,
        finished_ms INTEGER,
        UNIQUE (repo, number)
     );
     CREATE INDEX builds_by_status ON builds (status, id);
     CREATE INDEX builds_by_repo ON builds (repo, id);
     CREATE TABLE deliveries (
        key TEXT PRIMARY KEY,
        build_id INTEGER NOT NULL REFERENCES builds(id),
        received_ms INTEGER NOT NULL
     ) WITHOUT ROWID;
     CREATE TABLE jobs (
        build_id INTEGER NOT NULL REFERENCES builds(id),
        seq INTEGER NOT NULL,
        name TEXT NOT NULL,
        pod TEXT,
        label TEXT,
        branch TEXT,
        result TEXT,
        started_ms INTEGER NOT NULL,
        duration_ms INTEGER,
        PRIMARY KEY (build_id, seq)
     ) WITHOUT ROWID;
     CREATE TABLE stages (
        build_id INTEGER NOT NULL REFERENCES builds(id),
        seq INTEGER NOT NULL,
        name TEXT NOT NULL,
        path TEXT NOT NULL,
        parallel_branch INTEGER NOT NULL,
        job TEXT,
        branch TEXT,
        result TEXT,
        skipped INTEGER NOT NULL DEFAULT 0,
        started_ms INTEGER NOT NULL,
        duration_ms INTEGER,
        PRIMARY KEY (build_id, seq)
     ) WITHOUT ROWID;
     CREATE TABLE steps (
        build_id INTEGER NOT NULL REFERENCES builds(id),
        step_id INTEGER NOT NULL,
        step TEXT NOT NULL,
        summary TEXT NOT NULL,
        job TEXT,
        branch TEXT,
        stage TEXT,
        container TEXT,
        result TEXT,
        error TEXT,
        started_ms INTEGER NOT NULL,
        duration_ms INTEGER,
        log_bytes INTEGER NOT NULL DEFAULT 0,
        log_truncated INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (build_id, step_id)
     ) WITHOUT ROWID;",
    // 2: how long each pod took in each phase of its start.
    "CREATE TABLE pod_phases (
        build_id INTEGER NOT NULL REFERENCES builds(id),
        pod TEXT NOT NULL,
        job TEXT NOT NULL,
        backend TEXT NOT NULL,
        phase TEXT NOT NULL,
        at_ms INTEGER NOT NULL,
        took_ms INTEGER NOT NULL,
        detail TEXT,
        recorded_ms INTEGER NOT NULL,
        PRIMARY KEY (build_id, pod, phase)
     ) WITHOUT ROWID;",
    // 3: API tokens, kept as SHA-256 digests only.
    "CREATE TABLE api_tokens (
        name TEXT PRIMARY KEY,
        digest BLOB NOT NULL UNIQUE,
        scopes TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        last_used_ms INTEGER
     );",
];

/// The schema version this binary writes.
pub(crate) const VERSION: i64 = MIGRATIONS.len() as i64;

pub(crate) fn migrate(c: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let found: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > VERSION {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found,
            known: VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = c.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
        tracing::info!(version = i + 1, db = %path.display(), "store schema migrated");
    }
    Ok(())
}
