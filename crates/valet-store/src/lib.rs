//! `valet-store`: the controller's durable history.
//!
//! One SQLite file (`valet.db`, WAL, `synchronous=NORMAL`) holds repositories, builds,
//! jobs, stages, steps and webhook deliveries; the bytes of logs live in files beside it
//! (`logs/<build>/`), capped per step with a marker line ([`logs`]).
//!
//! The API is synchronous: the controller calls it off its async threads. Writes go through
//! one connection behind a mutex (SQLite has one writer anyway; WAL commits without fsync
//! at `synchronous=NORMAL`, so a write is tens of microseconds); reads use a small pool of
//! their own connections, so a reader never waits for a writer.
//!
//! What it is not: a queue or a scheduler. It records states; the controller decides.
//! Start at [`Store::open`]; the schema is in [`schema`].

pub mod logs;
mod schema;
pub mod tokens;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension as _, params};
use serde::Serialize;

pub use logs::{BuildLog, LOG_TRUNCATED_MARKER};
pub use tokens::{Scope, TokenRow};

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("unknown repository `{0}`")]
    UnknownRepo(String),
    #[error(
        "the database {path} has schema version {found}, newer than this valet knows ({known})"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
}

pub type BuildId = i64;

/// Milliseconds since the Unix epoch, the unit of every time in the store.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Where a build is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BuildStatus {
    Queued,
    Running,
    Finished,
}

impl BuildStatus {
    fn parse(s: &str) -> BuildStatus {
        match s {
            "queued" => BuildStatus::Queued,
            "running" => BuildStatus::Running,
            _ => BuildStatus::Finished,
        }
    }
}

/// A build to record.
#[derive(Debug, Clone, Default)]
pub struct NewBuild {
    pub repo: String,
    pub branch: Option<String>,
    pub commit: Option<String>,
    /// A ref to fetch when the commit is not on a branch (`refs/pull/12/head`).
    pub git_ref: Option<String>,
    /// `github`, `gitlab`, `generic` or `manual`.
    pub trigger: String,
    /// What the trigger said, in words (`push to main`, `pull request #12 opened`).
    pub cause: String,
    pub params: serde_json::Map<String, serde_json::Value>,
    /// The delivery's id (`github:<X-GitHub-Delivery>`, …): a second delivery with the same
    /// key does not record a second build.
    pub delivery: Option<String>,
}

/// The answer to [`Store::create_build`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Created {
    pub id: BuildId,
    pub number: i64,
    /// The delivery was seen before: `id` is the build it started then.
    pub duplicate: bool,
}

/// A build as listed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuildRow {
    pub id: BuildId,
    pub repo: String,
    pub number: i64,
    pub branch: Option<String>,
    pub commit: Option<String>,
    pub git_ref: Option<String>,
    pub trigger: String,
    pub cause: String,
    pub params: serde_json::Map<String, serde_json::Value>,
    pub status: BuildStatus,
    /// `SUCCESS`, `UNSTABLE`, `FAILURE`, `ABORTED`, `NOT_BUILT` or `ERROR`; `None` until finished.
    pub result: Option<String>,
    /// Why the build ended as it did, when a result alone does not say (always for `ERROR`).
    pub reason: Option<String>,
    pub created_ms: i64,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    pub duration_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRow {
    pub seq: i64,
    pub name: String,
    pub pod: Option<String>,
    pub label: Option<String>,
    pub branch: Option<String>,
    pub result: Option<String>,
    pub started_ms: i64,
    pub duration_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageRow {
    pub seq: i64,
    pub name: String,
    /// Enclosing stages and parallel branches, outermost first, this one last.
    pub path: Vec<String>,
    pub parallel_branch: bool,
    pub job: Option<String>,
    pub branch: Option<String>,
    pub result: Option<String>,
    pub skipped: bool,
    pub started_ms: i64,
    pub duration_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepRow {
    /// The runtime's step id (unique in the build).
    pub id: i64,
    pub step: String,
    pub summary: String,
    pub job: Option<String>,
    pub branch: Option<String>,
    pub stage: Option<String>,
    pub container: Option<String>,
    pub result: Option<String>,
    pub error: Option<String>,
    pub started_ms: i64,
    pub duration_ms: Option<i64>,
    pub log_bytes: i64,
    pub log_truncated: bool,
}

/// One pod of a build and how long each phase of its start took.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PodRow {
    pub pod: String,
    pub job: String,
    pub backend: String,
    /// In the order they were reached.
    pub phases: Vec<PodPhaseRow>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PodPhaseRow {
    /// `queued`, `placed`, `created`, `started`, `agent_connected`, `first_step_byte`.
    pub phase: String,
    /// Since the pod was asked for.
    pub at_ms: i64,
    /// Since the previous phase.
    pub took_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A build with everything recorded about it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuildDetail {
    #[serde(flatten)]
    pub build: BuildRow,
    pub jobs: Vec<JobRow>,
    pub stages: Vec<StageRow>,
    pub steps: Vec<StepRow>,
    pub pods: Vec<PodRow>,
}

/// The store: a database file and the log files beside it.
pub struct Store {
    dir: PathBuf,
    db_path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

const MAX_IDLE_READERS: usize = 8;
const BUILD_COLUMNS: &str = "id, repo, number, branch, commit_sha, git_ref, trigger, cause, params, status, result, reason, created_ms, started_ms, finished_ms";

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves a connection that is still consistent (SQLite
    // rolls back an open transaction when the statement is dropped), so go on.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Store {
    /// Opens (or creates) the store in `dir`: `dir/valet.db` and `dir/logs/`. Migrates the
    /// schema to the current version.
    ///
    /// What it writes is the controller user's alone, whatever the umask: the database file
    /// is created 0600 before SQLite opens it (SQLite gives its `-wal` and `-shm` files the
    /// database's mode), files of an older store are brought to 0600, and log directories
    /// and files are made 0700 and 0600 ([`logs`]).
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        logs::private_dir(&dir.join("logs"))?;
        let db_path = dir.join("valet.db");
        private_file(&db_path)?;
        let mut writer = Connection::open(&db_path)?;
        configure(&writer)?;
        schema::migrate(&mut writer, &db_path)?;
        // A store written before files were made private, or a `-wal`/`-shm` left by one.
        for suffix in ["", "-wal", "-shm"] {
            let p = PathBuf::from(format!("{}{suffix}", db_path.display()));
            if p.exists() {
                logs::chmod(&p, 0o600)?;
            }
        }
        Ok(Store {
            dir: dir.to_path_buf(),
            db_path,
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
        })
    }

    /// The directory holding the database and the logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = lock(&self.readers).pop();
        let conn = match conn {
            Some(c) => c,
            None => {
                let c = Connection::open_with_flags(
                    &self.db_path,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                        | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                c.busy_timeout(std::time::Duration::from_secs(5))?;
                c
            }
        };
        let r = f(&conn);
        let mut idle = lock(&self.readers);
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
        r
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = lock(&self.writer);
        f(&mut conn)
    }

    /// Makes the repositories table match the configuration (new ones added, URLs updated;
    /// repositories no longer configured keep their history).
    pub fn sync_repos(&self, repos: &[(String, String)]) -> Result<(), StoreError> {
        self.write(|c| {
            let tx = c.transaction()?;
            {
                let mut st = tx.prepare_cached(
                    "INSERT INTO repos (name, url) VALUES (?1, ?2)
                     ON CONFLICT(name) DO UPDATE SET url = excluded.url",
                )?;
                for (name, url) in repos {
                    st.execute(params![name, url])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// Records a queued build, numbered per repository, and its delivery in one
    /// transaction. A delivery key seen before records nothing and answers with the build
    /// that delivery started.
    pub fn create_build(&self, b: &NewBuild) -> Result<Created, StoreError> {
        let params_json = serde_json::Value::Object(b.params.clone()).to_string();
        self.write(|c| {
            let tx = c.transaction()?;
            if let Some(key) = &b.delivery {
                let seen: Option<(i64, i64)> = tx
                    .prepare_cached(
                        "SELECT d.build_id, b.number FROM deliveries d JOIN builds b ON b.id = d.build_id
                         WHERE d.key = ?1",
                    )?
                    .query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                if let Some((id, number)) = seen {
                    return Ok(Created {
                        id,
                        number,
                        duplicate: true,
                    });
                }
            }
            let number: Option<i64> = tx
                .prepare_cached(
                    "UPDATE repos SET next_number = next_number + 1 WHERE name = ?1
                     RETURNING next_number - 1",
                )?
                .query_row([&b.repo], |r| r.get(0))
                .optional()?;
            let Some(number) = number else {
                return Err(StoreError::UnknownRepo(b.repo.clone()));
            };
            let now = now_ms();
            tx.prepare_cached(
                "INSERT INTO builds (repo, number, branch, commit_sha, git_ref, trigger, cause, params, status, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'queued', ?9)",
            )?
            .execute(params![
                b.repo,
                number,
                b.branch,
                b.commit,
                b.git_ref,
                b.trigger,
                b.cause,
                params_json,
                now
            ])?;
            let id = tx.last_insert_rowid();
            if let Some(key) = &b.delivery {
                tx.prepare_cached(
                    "INSERT INTO deliveries (key, build_id, received_ms) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![key, id, now])?;
            }
            tx.commit()?;
            Ok(Created {
                id,
                number,
                duplicate: false,
            })
        })
    }

    /// queued → running. False when the build is not queued any more (cancelled).
    pub fn start_build(&self, id: BuildId) -> Result<bool, StoreError> {
        self.write(|c| {
            let n = c
                .prepare_cached(
                    "UPDATE builds SET status = 'running', started_ms = ?2
                     WHERE id = ?1 AND status = 'queued'",
                )?
                .execute(params![id, now_ms()])?;
            Ok(n == 1)
        })
    }

    /// Records the commit a build checked out (when its trigger named only a branch).
    pub fn set_commit(&self, id: BuildId, commit: &str) -> Result<(), StoreError> {
        self.write(|c| {
            c.prepare_cached("UPDATE builds SET commit_sha = ?2 WHERE id = ?1")?
                .execute(params![id, commit])?;
            Ok(())
        })
    }

    /// Records the end of a build. Only a build not finished yet changes.
    pub fn finish_build(
        &self,
        id: BuildId,
        result: &str,
        reason: Option<&str>,
    ) -> Result<bool, StoreError> {
        self.write(|c| {
            let n = c
                .prepare_cached(
                    "UPDATE builds SET status = 'finished', result = ?2, reason = ?3, finished_ms = ?4
                     WHERE id = ?1 AND status != 'finished'",
                )?
                .execute(params![id, result, reason, now_ms()])?;
            Ok(n == 1)
        })
    }

    /// Ends a build that has not started: ABORTED with `reason`. False when it had started.
    pub fn cancel_queued(&self, id: BuildId, reason: &str) -> Result<bool, StoreError> {
        self.write(|c| {
            let n = c
                .prepare_cached(
                    "UPDATE builds SET status = 'finished', result = 'ABORTED', reason = ?2, finished_ms = ?3
                     WHERE id = ?1 AND status = 'queued'",
                )?
                .execute(params![id, reason, now_ms()])?;
            Ok(n == 1)
        })
    }

    /// After a restart: every build that was running ends as ERROR with `reason` (its
    /// steps are not run again). Returns those builds.
    pub fn fail_running(&self, reason: &str) -> Result<Vec<BuildRow>, StoreError> {
        self.write(|c| {
            let tx = c.transaction()?;
            let rows = {
                let mut st = tx.prepare(&format!(
                    "SELECT {BUILD_COLUMNS} FROM builds WHERE status = 'running' ORDER BY id"
                ))?;
                st.query_map([], build_row)?
                    .collect::<Result<Vec<_>, _>>()?
            };
            let now = now_ms();
            for b in &rows {
                tx.execute(
                    "UPDATE builds SET status = 'finished', result = 'ERROR', reason = ?2, finished_ms = ?3
                     WHERE id = ?1",
                    params![b.id, reason, now],
                )?;
                // Steps, stages and jobs that were open end with the build.
                for table in ["steps", "stages", "jobs"] {
                    tx.execute(
                        &format!(
                            "UPDATE {table} SET result = 'ABORTED', duration_ms = ?2 - started_ms
                             WHERE build_id = ?1 AND result IS NULL"
                        ),
                        params![b.id, now],
                    )?;
                }
            }
            tx.commit()?;
            Ok(rows)
        })
    }

    /// Builds waiting to run, oldest first.
    pub fn queued_builds(&self) -> Result<Vec<BuildRow>, StoreError> {
        self.read(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {BUILD_COLUMNS} FROM builds WHERE status = 'queued' ORDER BY id"
            ))?;
            Ok(st
                .query_map([], build_row)?
                .collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// The most recent builds first, of one repository or all; `before` pages back.
    pub fn list_builds(
        &self,
        repo: Option<&str>,
        limit: u32,
        before: Option<BuildId>,
    ) -> Result<Vec<BuildRow>, StoreError> {
        self.read(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {BUILD_COLUMNS} FROM builds
                 WHERE (?1 IS NULL OR repo = ?1) AND (?2 IS NULL OR id < ?2)
                 ORDER BY id DESC LIMIT ?3"
            ))?;
            Ok(st
                .query_map(params![repo, before, limit], build_row)?
                .collect::<Result<Vec<_>, _>>()?)
        })
    }

    pub fn get_build(&self, id: BuildId) -> Result<Option<BuildRow>, StoreError> {
        self.read(|c| {
            Ok(
                c.prepare_cached(&format!("SELECT {BUILD_COLUMNS} FROM builds WHERE id = ?1"))?
                    .query_row([id], build_row)
                    .optional()?,
            )
        })
    }

    /// A build with its jobs, stages and steps, in the order they started.
    pub fn build_detail(&self, id: BuildId) -> Result<Option<BuildDetail>, StoreError> {
        self.read(|c| {
            let Some(build) = c
                .prepare_cached(&format!(
                    "SELECT {BUILD_COLUMNS} FROM builds WHERE id = ?1"
                ))?
                .query_row([id], build_row)
                .optional()?
            else {
                return Ok(None);
            };
            let jobs = c
                .prepare_cached(
                    "SELECT seq, name, pod, label, branch, result, started_ms, duration_ms
                     FROM jobs WHERE build_id = ?1 ORDER BY seq",
                )?
                .query_map([id], |r| {
                    Ok(JobRow {
                        seq: r.get(0)?,
                        name: r.get(1)?,
                        pod: r.get(2)?,
                        label: r.get(3)?,
                        branch: r.get(4)?,
                        result: r.get(5)?,
                        started_ms: r.get(6)?,
                        duration_ms: r.get(7)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let stages = c
                .prepare_cached(
                    "SELECT seq, name, path, parallel_branch, job, branch, result, skipped, started_ms, duration_ms
                     FROM stages WHERE build_id = ?1 ORDER BY seq",
                )?
                .query_map([id], |r| {
                    let path: String = r.get(2)?;
                    Ok(StageRow {
                        seq: r.get(0)?,
                        name: r.get(1)?,
                        path: serde_json::from_str(&path).unwrap_or_default(),
                        parallel_branch: r.get(3)?,
                        job: r.get(4)?,
                        branch: r.get(5)?,
                        result: r.get(6)?,
                        skipped: r.get(7)?,
                        started_ms: r.get(8)?,
                        duration_ms: r.get(9)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let steps = c
                .prepare_cached(
                    "SELECT step_id, step, summary, job, branch, stage, container, result, error,
                            started_ms, duration_ms, log_bytes, log_truncated
                     FROM steps WHERE build_id = ?1 ORDER BY started_ms, step_id",
                )?
                .query_map([id], |r| {
                    Ok(StepRow {
                        id: r.get(0)?,
                        step: r.get(1)?,
                        summary: r.get(2)?,
                        job: r.get(3)?,
                        branch: r.get(4)?,
                        stage: r.get(5)?,
                        container: r.get(6)?,
                        result: r.get(7)?,
                        error: r.get(8)?,
                        started_ms: r.get(9)?,
                        duration_ms: r.get(10)?,
                        log_bytes: r.get(11)?,
                        log_truncated: r.get(12)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let pods = pod_rows(c, id)?;
            Ok(Some(BuildDetail {
                build,
                jobs,
                stages,
                steps,
                pods,
            }))
        })
    }

    /// Finished builds by result, for metrics.
    pub fn counts_by_result(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT result, count(*) FROM builds WHERE status = 'finished' GROUP BY result ORDER BY result",
            )?;
            Ok(st
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?
                .collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Records the recorded parts of a running build (jobs, stages, steps), each in its own
    /// transaction so that it is durable before the call returns.
    pub fn record(&self, id: BuildId, rec: &Record) -> Result<(), StoreError> {
        self.write(|c| {
            match rec {
                Record::JobStarted {
                    seq,
                    name,
                    pod,
                    label,
                    branch,
                    started_ms,
                } => {
                    c.prepare_cached(
                        "INSERT INTO jobs (build_id, seq, name, pod, label, branch, started_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    )?
                    .execute(params![id, seq, name, pod, label, branch, started_ms])?;
                }
                Record::JobFinished {
                    seq,
                    result,
                    duration_ms,
                } => {
                    c.prepare_cached(
                        "UPDATE jobs SET result = ?3, duration_ms = ?4 WHERE build_id = ?1 AND seq = ?2",
                    )?
                    .execute(params![id, seq, result, duration_ms])?;
                }
                Record::StageStarted {
                    seq,
                    name,
                    path,
                    parallel_branch,
                    job,
                    branch,
                    started_ms,
                } => {
                    let path = serde_json::to_string(path).unwrap_or_else(|_| "[]".into());
                    c.prepare_cached(
                        "INSERT INTO stages (build_id, seq, name, path, parallel_branch, job, branch, skipped, started_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, ?8)",
                    )?
                    .execute(params![id, seq, name, path, parallel_branch, job, branch, started_ms])?;
                }
                Record::StageFinished {
                    seq,
                    result,
                    skipped,
                    duration_ms,
                } => {
                    c.prepare_cached(
                        "UPDATE stages SET result = ?3, skipped = ?4, duration_ms = ?5
                         WHERE build_id = ?1 AND seq = ?2",
                    )?
                    .execute(params![id, seq, result, skipped, duration_ms])?;
                }
                Record::StepStarted {
                    step_id,
                    step,
                    summary,
                    job,
                    branch,
                    stage,
                    container,
                    started_ms,
                } => {
                    c.prepare_cached(
                        "INSERT OR REPLACE INTO steps (build_id, step_id, step, summary, job, branch, stage, container, started_ms, log_bytes, log_truncated)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0, 0)",
                    )?
                    .execute(params![id, step_id, step, summary, job, branch, stage, container, started_ms])?;
                }
                Record::PodPhase {
                    pod,
                    job,
                    backend,
                    phase,
                    at_ms,
                    took_ms,
                    detail,
                    recorded_ms,
                } => {
                    c.prepare_cached(
                        "INSERT OR REPLACE INTO pod_phases (build_id, pod, job, backend, phase, at_ms, took_ms, detail, recorded_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    )?
                    .execute(params![id, pod, job, backend, phase, at_ms, took_ms, detail, recorded_ms])?;
                }
                Record::StepFinished {
                    step_id,
                    result,
                    error,
                    duration_ms,
                    log_bytes,
                    log_truncated,
                } => {
                    c.prepare_cached(
                        "UPDATE steps SET result = ?3, error = ?4, duration_ms = ?5, log_bytes = ?6, log_truncated = ?7
                         WHERE build_id = ?1 AND step_id = ?2",
                    )?
                    .execute(params![id, step_id, result, error, duration_ms, log_bytes, log_truncated])?;
                }
            }
            Ok(())
        })
    }

    /// The log files of build `id` (created on first write).
    pub fn log_dir(&self, id: BuildId) -> PathBuf {
        self.dir.join("logs").join(id.to_string())
    }

    /// A writer for the logs of build `id`, capping each step at `step_limit` bytes.
    pub fn build_log(&self, id: BuildId, step_limit: u64) -> Result<BuildLog, StoreError> {
        BuildLog::create(self.log_dir(id), step_limit)
    }

    /// The whole log of a build (empty when nothing was written).
    pub fn read_log(&self, id: BuildId) -> Result<String, StoreError> {
        logs::read_text(&self.log_dir(id).join(logs::BUILD_LOG))
    }

    /// Whether build `id` has recorded step `step`.
    pub fn has_step(&self, id: BuildId, step: i64) -> Result<bool, StoreError> {
        self.read(|c| {
            Ok(
                c.prepare_cached("SELECT 1 FROM steps WHERE build_id = ?1 AND step_id = ?2")?
                    .exists(params![id, step])?,
            )
        })
    }

    /// The log of one step.
    pub fn read_step_log(&self, id: BuildId, step: i64) -> Result<String, StoreError> {
        logs::read_text(&self.log_dir(id).join("steps").join(format!("{step}.log")))
    }

    /// The file holding the events of build `id`, one JSON object per line (it may not
    /// exist: a build that wrote nothing). For readers that stream it rather than hold it.
    pub fn events_path(&self, id: BuildId) -> PathBuf {
        self.log_dir(id).join(logs::EVENTS)
    }

    /// The events of a finished build, one JSON object per item, in order.
    pub fn read_events(&self, id: BuildId) -> Result<Vec<String>, StoreError> {
        let text = logs::read_text(&self.log_dir(id).join(logs::EVENTS))?;
        Ok(text
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect())
    }
}

/// One recorded change of a running build. `seq` numbers jobs and stages within a build in
/// the order they started.
#[derive(Debug, Clone)]
pub enum Record {
    JobStarted {
        seq: i64,
        name: String,
        pod: String,
        label: Option<String>,
        branch: Option<String>,
        started_ms: i64,
    },
    JobFinished {
        seq: i64,
        result: String,
        duration_ms: i64,
    },
    StageStarted {
        seq: i64,
        name: String,
        path: Vec<String>,
        parallel_branch: bool,
        job: Option<String>,
        branch: Option<String>,
        started_ms: i64,
    },
    StageFinished {
        seq: i64,
        result: String,
        skipped: bool,
        duration_ms: i64,
    },
    StepStarted {
        step_id: i64,
        step: String,
        summary: String,
        job: Option<String>,
        branch: Option<String>,
        stage: Option<String>,
        container: Option<String>,
        started_ms: i64,
    },
    StepFinished {
        step_id: i64,
        result: String,
        error: Option<String>,
        duration_ms: i64,
        log_bytes: i64,
        log_truncated: bool,
    },
    /// A pod reached a phase of its start (`queued` … `first_step_byte`).
    PodPhase {
        pod: String,
        job: String,
        backend: String,
        phase: String,
        at_ms: i64,
        took_ms: i64,
        detail: Option<String>,
        /// When the controller recorded it (orders the pods of a build).
        recorded_ms: i64,
    },
}

/// The pods of build `id` with their phases, pods in the order they were asked for.
fn pod_rows(c: &Connection, id: BuildId) -> rusqlite::Result<Vec<PodRow>> {
    let mut st = c.prepare_cached(
        "SELECT pod, job, backend, phase, at_ms, took_ms, detail
         FROM pod_phases WHERE build_id = ?1 ORDER BY recorded_ms, at_ms",
    )?;
    let mut pods: Vec<PodRow> = Vec::new();
    let rows = st.query_map([id], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            PodPhaseRow {
                phase: r.get(3)?,
                at_ms: r.get(4)?,
                took_ms: r.get(5)?,
                detail: r.get(6)?,
            },
        ))
    })?;
    for row in rows {
        let (pod, job, backend, phase) = row?;
        match pods.iter_mut().find(|p| p.pod == pod) {
            Some(p) => p.phases.push(phase),
            None => pods.push(PodRow {
                pod,
                job,
                backend,
                phases: vec![phase],
            }),
        }
    }
    Ok(pods)
}

/// Creates `path` empty with mode 0600 when it does not exist (an existing file is kept).
fn private_file(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(StoreError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn configure(c: &Connection) -> Result<(), rusqlite::Error> {
    // WAL: readers never block the writer nor the other way round. NORMAL: a commit is
    // durable against a process crash (the WAL is in the OS's hands); only a power loss
    // can lose the last commits, which is the trade the webhook rate needs.
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", "NORMAL")?;
    c.pragma_update(None, "foreign_keys", "ON")?;
    // What is deleted or replaced is overwritten, not left in free pages: a repository
    // URL that once held a token does not survive its update in the file.
    c.pragma_update(None, "secure_delete", "ON")?;
    c.busy_timeout(std::time::Duration::from_secs(5))?;
    c.set_prepared_statement_cache_capacity(64);
    Ok(())
}

fn build_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BuildRow> {
    let params: String = r.get(8)?;
    let status: String = r.get(9)?;
    let started_ms: Option<i64> = r.get(13)?;
    let finished_ms: Option<i64> = r.get(14)?;
    Ok(BuildRow {
        id: r.get(0)?,
        repo: r.get(1)?,
        number: r.get(2)?,
        branch: r.get(3)?,
        commit: r.get(4)?,
        git_ref: r.get(5)?,
        trigger: r.get(6)?,
        cause: r.get(7)?,
        params: serde_json::from_str(&params).unwrap_or_default(),
        status: BuildStatus::parse(&status),
        result: r.get(10)?,
        reason: r.get(11)?,
        created_ms: r.get(12)?,
        started_ms,
        finished_ms,
        duration_ms: match (started_ms, finished_ms) {
            (Some(s), Some(f)) => Some(f - s),
            _ => None,
        },
    })
}

#[cfg(test)]
mod tests;
