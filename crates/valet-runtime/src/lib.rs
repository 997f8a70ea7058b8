//! `valet-runtime`: runs a pipeline file against a backend.
//!
//! A tree-walking async interpreter over the `valet-dsl` AST (scripted and declarative
//! alike): variables and scopes, GString interpolation, `env`, `params`, `currentBuild`,
//! functions and closures, control flow, and the pipeline steps (`sh`, `stage`, `node`,
//! `parallel`, `timeout`, `retry`, `withCredentials`, …). Pods come from the plan
//! ([`JobGraph`]): a `node` call finds its job by the span of the call.
//!
//! Start at [`run`]. What it emits is a stream of [`Event`]s; what it returns is the
//! [`BuildOutcome`]. It knows no concrete backend, no terminal and no HTTP.
//!
//! Invariants:
//! - every output chunk and message goes through the secret masker before it becomes an
//!   event ([`secrets`]);
//! - cancelling (the token given to [`run`], a `timeout`, a `failFast`) ends the process
//!   trees of the running steps through [`ExecutionHandle::cancel`](valet_backend::ExecutionHandle::cancel).

mod archive;
mod declarative;
pub mod event;
mod glob;
mod interp;
pub mod lines;
mod methods;
mod resolve;
mod scope;
pub mod secrets;
mod steps;
mod value;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indexmap::IndexMap;
use tokio::sync::mpsc;

/// The stack a thread that runs builds should have: the interpreter recurses once per
/// nesting level of the pipeline (calls, closures, expressions) and refuses to go deeper
/// when a thread's stack is nearly used up, so a bigger stack lets deeper pipelines run.
/// Only the pages touched are used.
pub const THREAD_STACK_SIZE: usize = 64 * 1024 * 1024;
pub use tokio_util::sync::CancellationToken;
use valet_backend::Backend;
use valet_dsl::SourceFile;
use valet_dsl::ast::Script;
use valet_plan::model::JobGraph;

pub use event::{BuildResult, Event, NoticeLevel, Place, Stream};
pub use interp::StageSummary;
pub use lines::{Leftover, Lines};
pub use resolve::planned_pod;
pub use secrets::Secrets;

use interp::{Ctx, Flow, Interp};
use value::{ExcKind, Value, lock};

/// The git checkout a pipeline file lives in: what `checkout scm` copies.
#[derive(Debug, Clone)]
pub struct ScmInfo {
    pub dir: PathBuf,
    pub commit: Option<String>,
    pub branch: Option<String>,
}

impl ScmInfo {
    /// The checkout containing `path`, when there is one (asks the `git` CLI).
    pub fn detect(path: &Path) -> Option<ScmInfo> {
        let dir = if path.is_dir() {
            path.to_path_buf()
        } else {
            path.parent()?.to_path_buf()
        };
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let git = |args: &[&str]| -> Option<String> {
            let out = std::process::Command::new("git")
                .arg("-C")
                .arg(&dir)
                .args(args)
                .stderr(std::process::Stdio::null())
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        };
        let top = git(&["rev-parse", "--show-toplevel"])?;
        let commit = git(&["rev-parse", "HEAD"]);
        let branch = git(&["rev-parse", "--abbrev-ref", "HEAD"]).filter(|b| b != "HEAD");
        Some(ScmInfo {
            dir: PathBuf::from(top),
            commit,
            branch,
        })
    }
}

/// How to run a build.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub build_number: u64,
    /// `JOB_NAME`; by default the pipeline file's directory (for a `Jenkinsfile`) or stem.
    pub job_name: Option<String>,
    /// Build parameters given on the command line (`-p NAME=VALUE`).
    pub params: IndexMap<String, String>,
    /// Extra environment variables (`--env K=V`); they win over the process environment
    /// and the build variables.
    pub env: IndexMap<String, String>,
    /// Whether steps see the environment of the process running valet.
    pub inherit_env: bool,
    pub secrets: Secrets,
    /// Where `archiveArtifacts` copies files; `None` keeps none.
    pub artifacts_dir: Option<PathBuf>,
    pub scm: Option<ScmInfo>,
    /// Between TERM and KILL when a step is interrupted.
    pub kill_grace: Duration,
    /// The repository the pipeline comes from (the controller's name for it), for the
    /// backend's labels and fair sharing.
    pub repository: Option<String>,
    /// What the operator allows a pipeline's containers (privilege, user, default CPU
    /// limit), applied to every pod before a backend sees it.
    pub container_policy: valet_backend::ContainerPolicy,
    /// How much a pipeline may bring into the valet process and its spool files.
    pub limits: Limits,
}

/// How much a pipeline may bring out of its pods into valet: what it reads into a value is
/// held in memory, stashes and archives go through files in a temporary directory of the
/// build. Past a limit the step fails with an error that names the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// What one step reads into a value: `sh(returnStdout: true)`, `readFile`, each file
    /// of `readJSON`, `readProperties`, `load` and `junit`, and the file list of a pattern.
    pub read: u64,
    /// One stash (its tar stream).
    pub stash: u64,
    /// All the stashes of a build together.
    pub stashes: u64,
    /// The tar stream of one `archiveArtifacts`.
    pub archive: u64,
}

impl Limits {
    const MIB: u64 = 1024 * 1024;
    const GIB: u64 = 1024 * Self::MIB;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            read: 16 * Self::MIB,
            stash: Self::GIB,
            stashes: 4 * Self::GIB,
            archive: 4 * Self::GIB,
        }
    }
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            build_number: 1,
            job_name: None,
            params: IndexMap::new(),
            env: IndexMap::new(),
            inherit_env: true,
            secrets: Secrets::default(),
            artifacts_dir: None,
            scm: None,
            kill_grace: Duration::from_secs(2),
            repository: None,
            container_policy: valet_backend::ContainerPolicy::default(),
            limits: Limits::default(),
        }
    }
}

impl RunOptions {
    pub(crate) fn job_name_or_default(&self, source: &SourceFile) -> String {
        if let Some(n) = &self.job_name {
            return n.clone();
        }
        let p = Path::new(&source.name);
        let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("pipeline");
        if stem == "Jenkinsfile" {
            let dir = std::fs::canonicalize(p).ok().and_then(|c| {
                c.parent()
                    .and_then(|d| d.file_name())
                    .map(|d| d.to_string_lossy().into_owned())
            });
            return dir.unwrap_or_else(|| stem.to_string());
        }
        stem.to_string()
    }
}

/// How a build ended.
#[derive(Debug, Clone)]
pub struct BuildOutcome {
    pub result: BuildResult,
    pub duration: Duration,
    pub stages: Vec<StageSummary>,
    /// The error that ended the build, when one did.
    pub error: Option<String>,
    /// The build ended because the backend failed, not the pipeline.
    pub backend_error: bool,
}

/// Runs `script` (parsed from `source`, planned as `graph`) on `backend`, sending events to
/// `events`. Cancelling `cancel` aborts the build: running steps are killed, `finally` and
/// `post` blocks still run.
pub async fn run(
    script: &Script,
    source: &SourceFile,
    graph: &JobGraph,
    backend: &dyn Backend,
    opts: &RunOptions,
    events: mpsc::Sender<Event>,
    cancel: CancellationToken,
) -> BuildOutcome {
    let job_name = opts.job_name_or_default(source);
    let mut base: BTreeMap<String, String> = BTreeMap::new();
    if opts.inherit_env {
        base.extend(std::env::vars().filter(|(k, _)| !k.starts_with("VALET_SECRET_")));
    }
    let n = opts.build_number.to_string();
    base.insert("BUILD_NUMBER".into(), n.clone());
    base.insert("BUILD_ID".into(), n.clone());
    base.insert("BUILD_DISPLAY_NAME".into(), format!("#{n}"));
    base.insert("BUILD_TAG".into(), format!("valet-{job_name}-{n}"));
    base.insert("BUILD_URL".into(), String::new());
    base.insert("JOB_NAME".into(), job_name.clone());
    base.insert(
        "JOB_BASE_NAME".into(),
        job_name.rsplit('/').next().unwrap_or(&job_name).to_string(),
    );
    base.insert("CI".into(), "true".into());
    if let Some(scm) = &opts.scm {
        if let Some(c) = &scm.commit {
            base.insert("GIT_COMMIT".into(), c.clone());
        }
        if let Some(b) = &scm.branch {
            base.insert("BRANCH_NAME".into(), b.clone());
            base.insert("GIT_BRANCH".into(), format!("origin/{b}"));
        }
    }
    for (k, v) in &opts.env {
        base.insert(k.clone(), v.clone());
    }
    let it = Interp::new(backend, graph, source, opts, script, events, base);
    it.emit(Event::BuildStarted {
        build: it.build_id.clone(),
        number: opts.build_number,
        job_name,
        file: source.name.clone(),
        backend: backend.name().to_string(),
    })
    .await;
    if let Some(n) = backend.notice() {
        it.notice(NoticeLevel::Info, n).await;
    }
    for p in &graph.parameters {
        let default =
            p.default
                .as_ref()
                .map(Value::from)
                .unwrap_or_else(|| match p.kind.as_str() {
                    "booleanParam" => Value::Bool(false),
                    "choice" => p
                        .choices
                        .first()
                        .cloned()
                        .map(Value::Str)
                        .unwrap_or(Value::Null),
                    _ => Value::str(""),
                });
        it.define_param(&p.name, &p.kind, default);
    }
    // Parameters given but not declared are still readable, as strings.
    for (k, v) in &opts.params {
        if let Value::Map(m) = &it.params {
            lock(m)
                .entry(k.clone())
                .or_insert_with(|| Value::Str(v.clone()));
        }
    }
    let ctx = Ctx {
        scope: it.root.clone(),
        timestamps: false,
        module: None,
        env: Default::default(),
        pod: None,
        container: None,
        cwd: None,
        stage: None,
        path: Default::default(),
        branch: None,
        cancel: cancel.clone(),
        depth: 0,
    };
    let span = tracing::info_span!("build", build = %it.build_id, file = %source.name);
    let r = tracing::Instrument::instrument(it.exec_stmts(&ctx, &script.stmts), span).await;
    let mut error = None;
    let mut backend_error = false;
    let mut result = it.build_result();
    match r {
        Ok(_) | Err(Flow::Return(_)) | Err(Flow::Break) | Err(Flow::Continue) => {}
        Err(Flow::Throw(e)) => {
            let r = match e.kind {
                ExcKind::Abort => BuildResult::Aborted,
                _ => BuildResult::Failure,
            };
            backend_error = e.kind == ExcKind::Backend;
            result = result.combine(r);
            let msg = it.masker.mask_str(&if e.class == "hudson.AbortException" {
                e.message.clone()
            } else {
                e.to_display()
            });
            it.log(&ctx, format!("ERROR: {msg}")).await;
            error = Some(msg);
        }
    }
    if cancel.is_cancelled() {
        result = result.combine(BuildResult::Aborted);
    }
    let duration = it.started.elapsed();
    it.emit(Event::BuildFinished {
        result,
        duration_ms: duration.as_millis() as u64,
    })
    .await;
    let mut stages = lock(&it.stages).clone();
    stages.sort_by_key(|(seq, _)| *seq);
    let stages: Vec<StageSummary> = stages.into_iter().map(|(_, s)| s).collect();
    BuildOutcome {
        result,
        duration,
        stages,
        error,
        backend_error,
    }
}
