//! Running one build: checkout (the `git` CLI, at the commit the trigger named, into a
//! directory of its own under the data directory), parse and plan, then the runtime on the
//! repository's backend. The runtime's events go, in order, to a [`Sink`] on a blocking
//! thread: the store (jobs, stages, steps), the log files (capped per step), the events
//! file and the live stream.
//!
//! A build ends SUCCESS, UNSTABLE, FAILURE, ABORTED or NOT_BUILT as the pipeline says, or
//! ERROR with a reason when it could not run: checkout failed, the pipeline is invalid (its
//! diagnostics are the log), the backend is unavailable or failed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::Instrument as _;
use valet_backend::{Backend, BackendError, Execution, Pod, ProvisionRequest, StepRunner};
use valet_dsl::{Diagnostic, SourceFile};
use valet_runtime::{CancellationToken, Event, RunOptions, ScmInfo, Stream};
use valet_store::{BuildId, BuildLog, BuildRow, Record, Store, now_ms};

use crate::config::Repo;
use crate::dispatch::Msg;
use crate::live::Live;
use crate::{Cancel, Controller, blocking, lock};

/// The longest a single git command of a checkout may take.
const GIT_TIMEOUT: Duration = Duration::from_secs(600);
/// Pipeline files larger than this are refused before parsing (the parser's own limit).
const MAX_PIPELINE_BYTES: u64 = 1024 * 1024;

/// How a build ended.
struct Ending {
    result: String,
    reason: Option<String>,
}

impl Ending {
    fn error(reason: impl Into<String>) -> Ending {
        Ending {
            result: "ERROR".into(),
            reason: Some(reason.into()),
        }
    }
}

/// The per-build directory holding its checkout and (local backend) its pods.
pub(crate) fn build_dir(c: &Controller, id: BuildId) -> PathBuf {
    c.inner.config.data_dir.join("builds").join(id.to_string())
}

pub(crate) async fn run_build(c: &Controller, e: valet_sched::BuildSpec) {
    let span = tracing::info_span!("build", id = e.id, repo = %e.repo, branch = %e.branch);
    run_build_inner(c, e).instrument(span).await
}

async fn run_build_inner(c: &Controller, e: valet_sched::BuildSpec) {
    let id = e.id;
    let store = c.inner.store.clone();
    // The cancel handle exists before the build is marked running, so a cancel that finds
    // the build running always finds something to cancel.
    let cancel = Cancel {
        token: CancellationToken::new(),
        reason: Arc::default(),
    };
    lock(&c.inner.cancels).insert(id, cancel.clone());
    let started = {
        let store = store.clone();
        blocking(move || {
            store
                .start_build(id)
                .and_then(|s| Ok((s, store.get_build(id)?)))
        })
        .await
    };
    let row = match started {
        Ok((true, Some(row))) => row,
        Ok(_) => {
            // Cancelled while queued.
            lock(&c.inner.cancels).remove(&id);
            return;
        }
        Err(err) => {
            lock(&c.inner.cancels).remove(&id);
            tracing::error!(error = %err, "cannot start the build");
            return;
        }
    };
    let live = c.inner.live.get_or_create(id);
    let limit = c.inner.config.step_log_limit;
    let log = {
        let store = store.clone();
        blocking(move || store.build_log(id, limit)).await
    };
    let ending = match log {
        Err(err) => Ending::error(format!("cannot write the build's log: {err}")),
        Ok(log) => {
            let sink = Arc::new(Mutex::new(Sink::new(c, id, log, live.clone())));
            let s = sink.clone();
            blocking(move || {
                lock(&s).status(serde_json::json!({"event": "build_status", "status": "running"}))
            })
            .await;
            let mut ending = execute(c, &row, &sink, &cancel).await;
            if cancel.token.is_cancelled() && ending.result != "ERROR" {
                ending.result = "ABORTED".into();
                ending.reason = lock(&cancel.reason).clone().or(ending.reason);
            }
            let s = sink.clone();
            let text = match &ending.reason {
                Some(r) => format!("Finished: {} ({r})", ending.result),
                None => format!("Finished: {}", ending.result),
            };
            blocking(move || lock(&s).line(&text)).await;
            ending
        }
    };
    tracing::info!(result = %ending.result, reason = ending.reason.as_deref().unwrap_or(""), "build finished");
    // The checkout and pods go before the result is recorded: a finished build has none.
    let dir = build_dir(c, id);
    blocking(move || {
        if dir.exists()
            && let Err(err) = std::fs::remove_dir_all(&dir)
        {
            tracing::warn!(dir = %dir.display(), error = %err, "cannot remove the build directory");
        }
    })
    .await;
    lock(&c.inner.cancels).remove(&id);
    finish(c, id, &ending.result, ending.reason.as_deref()).await;
}

/// Records the end of a build. The order keeps every subscriber whole: the final event
/// goes to the events file, then the result is committed, then live subscribers get the
/// final event and the live entry goes (a subscriber that finds no live entry finds a
/// finished build and a complete events file).
async fn finish(c: &Controller, id: BuildId, result: &str, reason: Option<&str>) {
    let ev = final_event(result, reason);
    write_event(c, id, &ev).await;
    let store = c.inner.store.clone();
    let (r, why) = (result.to_string(), reason.map(str::to_string));
    match blocking(move || store.finish_build(id, &r, why.as_deref())).await {
        Ok(_) => c.inner.metrics.build_finished(result),
        Err(err) => tracing::error!(error = %err, "cannot record the end of the build"),
    }
    publish_final(c, id, ev);
}

/// The end of a build whose result is already committed (cancelled while queued).
pub(crate) async fn finish_live(c: &Controller, id: BuildId, result: &str, reason: Option<&str>) {
    let ev = final_event(result, reason);
    write_event(c, id, &ev).await;
    publish_final(c, id, ev);
}

fn final_event(result: &str, reason: Option<&str>) -> String {
    serde_json::json!({
        "event": "build_status", "status": "finished", "result": result, "reason": reason,
    })
    .to_string()
}

async fn write_event(c: &Controller, id: BuildId, ev: &str) {
    let store = c.inner.store.clone();
    let limit = c.inner.config.step_log_limit;
    let json = ev.to_string();
    let written =
        blocking(move || store.build_log(id, limit).and_then(|mut l| l.event(&json))).await;
    if let Err(err) = written {
        tracing::warn!(error = %err, "cannot write the build's events");
    }
}

fn publish_final(c: &Controller, id: BuildId, ev: String) {
    if let Some(l) = c.inner.live.get(id) {
        l.push(ev.into());
    }
    c.inner.live.remove(id);
}

async fn execute(c: &Controller, b: &BuildRow, sink: &Arc<Mutex<Sink>>, cancel: &Cancel) -> Ending {
    let Some(repo) = c.inner.config.repo(&b.repo).cloned() else {
        return Ending::error(format!(
            "repository `{}` is not in the configuration any more",
            b.repo
        ));
    };
    let line = |text: String| {
        let s = sink.clone();
        blocking(move || lock(&s).line(&text))
    };
    // Checkout.
    let dir = build_dir(c, b.id);
    let checkout = dir.join("checkout");
    let what = b
        .commit
        .clone()
        .or_else(|| b.branch.clone())
        .unwrap_or_else(|| "the default branch".into());
    line(format!(
        "Checking out {} at {what}",
        crate::config::redact_url(&repo.url)
    ))
    .await;
    let co = tokio::select! {
        r = checkout_repo(&repo.url, &checkout, b).instrument(tracing::info_span!("checkout")) => r,
        _ = cancel.token.cancelled() => return Ending {
            result: "ABORTED".into(),
            reason: lock(&cancel.reason).clone(),
        },
    };
    let co = match co {
        Ok(co) => co,
        Err(err) => {
            let err = scrub(&err, &repo.url);
            line(format!("ERROR: checkout failed: {err}")).await;
            return Ending::error(format!("checkout failed: {err}"));
        }
    };
    line(format!("Commit {}", co.commit)).await;
    if b.commit.as_deref() != Some(co.commit.as_str()) {
        let (store, id, sha) = (c.inner.store.clone(), b.id, co.commit.clone());
        if let Err(err) = blocking(move || store.set_commit(id, &sha)).await {
            tracing::warn!(error = %err, "cannot record the commit");
        }
    }
    // Parse and plan.
    let path = checkout.join(&repo.pipeline);
    let text = match read_pipeline(&path).await {
        Ok(t) => t,
        Err(err) => {
            let msg = format!("cannot read the pipeline `{}`: {err}", repo.pipeline);
            line(format!("ERROR: {msg}")).await;
            return Ending::error(msg);
        }
    };
    let source = SourceFile::new(repo.pipeline.clone(), text);
    let compiled = compile(source).await;
    if !compiled.diagnostics.is_empty() {
        let rendered = valet_dsl::render_all(&compiled.diagnostics, &compiled.source);
        let s = sink.clone();
        blocking(move || lock(&s).text(&rendered)).await;
    }
    let errors = compiled.diagnostics.iter().filter(|d| d.is_error()).count();
    let (Some(script), Some(graph)) = (compiled.script, compiled.graph) else {
        return Ending::error(format!(
            "the pipeline is invalid: {errors} error(s), see the log"
        ));
    };
    if errors > 0 {
        return Ending::error(format!(
            "the pipeline is invalid: {errors} error(s), see the log"
        ));
    }
    // One build at a time per branch when the configuration or the pipeline says so.
    let exclusive =
        repo.disable_concurrent_builds || graph.options.contains_key("disableConcurrentBuilds");
    // The scheduler answers once the branch is this build's; meanwhile the build holds no
    // slot, so it holds up no other build.
    if exclusive {
        let (reply, turn) = tokio::sync::oneshot::channel();
        c.send(Msg::Exclusive { build: b.id, reply });
        let aborted = || Ending {
            result: "ABORTED".into(),
            reason: lock(&cancel.reason).clone(),
        };
        let waited = tokio::select! {
            r = turn => r,
            _ = cancel.token.cancelled() => return aborted(),
        };
        match waited {
            Ok(true) => {
                line(
                    "Waited for the previous build of this branch (disableConcurrentBuilds)".into(),
                )
                .await
            }
            Ok(false) => {}
            // Taken out of the scheduler: only a cancel does that, and its token follows.
            Err(_) => {
                let _ =
                    tokio::time::timeout(Duration::from_secs(10), cancel.token.cancelled()).await;
                return aborted();
            }
        }
    }
    // The backend.
    let backend = match backend_for(c, &repo.backend).await {
        Ok(b) => b,
        Err(err) => {
            let msg = format!("the {} backend is not available: {err}", repo.backend);
            line(format!("ERROR: {msg}")).await;
            return Ending::error(msg);
        }
    };
    let opts = run_options(c, &repo, b, &co, &dir);
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(256);
    let (flush_tx, flushes) = tokio::sync::mpsc::unbounded_channel();
    let backend = Timed {
        inner: backend,
        controller: c.clone(),
        build: b.id,
        kind: repo.backend.clone(),
        cancel: cancel.token.clone(),
        gate: Gate(flush_tx),
    };
    let consumer =
        tokio::spawn(record(rx, flushes, sink.clone()).instrument(tracing::Span::current()));
    let outcome = valet_runtime::run(
        &script,
        &compiled.source,
        &graph,
        &backend,
        &opts,
        tx,
        cancel.token.clone(),
    )
    .await;
    // The runtime is done and `tx` is gone with it: the recorder ends once all is recorded.
    drop(backend);
    let _ = consumer.await;
    if outcome.backend_error {
        return Ending::error(format!(
            "the backend failed: {}",
            outcome.error.unwrap_or_default()
        ));
    }
    let result = outcome.result.as_str().to_string();
    let reason = if result == "SUCCESS" {
        None
    } else {
        outcome.error
    };
    Ending { result, reason }
}

fn run_options(c: &Controller, repo: &Repo, b: &BuildRow, co: &Checkout, dir: &Path) -> RunOptions {
    let mut env = indexmap::IndexMap::new();
    // Steps do not see the controller's environment (it may hold secrets), only what a
    // shell needs to find programs and a home.
    for k in ["PATH", "HOME", "LANG", "TMPDIR"] {
        if let Ok(v) = std::env::var(k) {
            env.insert(k.to_string(), v);
        }
    }
    if let Some(n) = b
        .branch
        .as_deref()
        .and_then(|br| br.strip_prefix("PR-").or_else(|| br.strip_prefix("MR-")))
    {
        env.insert("CHANGE_ID".into(), n.to_string());
    }
    env.insert("GIT_URL".into(), crate::config::redact_url(&repo.url));
    let params = b
        .params
        .iter()
        .map(|(k, v)| {
            let v = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), v)
        })
        .collect();
    RunOptions {
        build_number: b.number.max(0) as u64,
        job_name: Some(repo.name.clone()),
        params,
        env,
        inherit_env: false,
        // Credentials: `VALET_SECRET_*` of the controller's environment, taken at its start.
        secrets: c.inner.config.secrets.clone(),
        artifacts_dir: Some(
            c.inner
                .config
                .data_dir
                .join("artifacts")
                .join(b.id.to_string()),
        ),
        scm: Some(ScmInfo {
            dir: dir.join("checkout"),
            commit: Some(co.commit.clone()),
            branch: b.branch.clone().or_else(|| co.branch.clone()),
        }),
        kill_grace: Duration::from_secs(c.inner.config.backend.kill_grace_seconds),
        repository: Some(repo.name.clone()),
        container_policy: c.inner.config.container_policy.clone(),
        limits: valet_runtime::Limits::default(),
    }
}

/// The backend `kind`, built the first time a build needs it (and then shared, so its
/// pools and connections serve every build).
pub(crate) async fn backend_for(
    c: &Controller,
    kind: &str,
) -> Result<Arc<dyn Backend>, BackendError> {
    let mut backends = c.inner.backends.lock().await;
    if let Some(b) = backends.get(kind) {
        return Ok(b.clone());
    }
    let config = c
        .inner
        .config
        .backend
        .config_for(kind)
        .with_unprivileged_steps()
        .with_data_dir(&c.inner.config.data_dir);
    let backend = config.build().await?;
    backends.insert(kind.to_string(), backend.clone());
    Ok(backend)
}

/// The most events recorded in one blocking call.
const RECORD_BATCH: usize = 512;

/// Records the runtime's events, in order, as they come: a task per build that waits for
/// events without holding a thread, and writes each batch on a blocking thread for as long
/// as the writing takes. (A thread per build polling for events would hold one of the
/// blocking pool's 512 threads for the whole build, and a controller running more builds
/// than that would stall.)
///
/// A flush request (from [`Gate::flush`]) is answered once everything sent before it is
/// recorded: what the channel holds is taken and written first.
async fn record(
    mut rx: tokio::sync::mpsc::Receiver<Event>,
    mut flushes: tokio::sync::mpsc::UnboundedReceiver<tokio::sync::oneshot::Sender<()>>,
    sink: Arc<Mutex<Sink>>,
) {
    let write = |batch: Vec<Event>| {
        let sink = sink.clone();
        blocking(move || {
            let mut s = lock(&sink);
            for ev in &batch {
                s.event(ev);
            }
        })
    };
    let take = |rx: &mut tokio::sync::mpsc::Receiver<Event>, batch: &mut Vec<Event>| {
        while batch.len() < RECORD_BATCH {
            match rx.try_recv() {
                Ok(ev) => batch.push(ev),
                Err(_) => break,
            }
        }
    };
    loop {
        tokio::select! {
            biased;
            Some(done) = flushes.recv() => {
                loop {
                    let mut batch = Vec::new();
                    take(&mut rx, &mut batch);
                    if batch.is_empty() {
                        break;
                    }
                    write(batch).await;
                }
                let _ = done.send(());
            }
            ev = rx.recv() => {
                let Some(ev) = ev else { break };
                let mut batch = vec![ev];
                take(&mut rx, &mut batch);
                write(batch).await;
            }
        }
    }
}

/// Holds a step until the events sent before it are recorded (see [`record`]).
#[derive(Clone)]
struct Gate(tokio::sync::mpsc::UnboundedSender<tokio::sync::oneshot::Sender<()>>);

impl Gate {
    async fn flush(&self) {
        let (done, recorded) = tokio::sync::oneshot::channel();
        if self.0.send(done).is_ok() {
            // An error is the recorder gone: then everything is recorded.
            let _ = recorded.await;
        }
    }
}

/// The backend of a build: asks the scheduler for a place before each pod (`max_pods`),
/// times how long pods take to be ready (`/metrics`), and holds every command until the
/// events before it are recorded, so a finished step's result and log are on disk before
/// the next step starts.
struct Timed {
    inner: Arc<dyn Backend>,
    controller: Controller,
    build: BuildId,
    /// The backend's kind, as the scheduler's limits name it.
    kind: String,
    /// The build's: a pod still waiting for its place is given up.
    cancel: CancellationToken,
    gate: Gate,
}

/// A pod's place in the scheduler, given back when dropped (the pod torn down, its
/// provisioning failed or given up).
struct Placement {
    controller: Controller,
    pod: valet_sched::PodId,
}

impl Drop for Placement {
    fn drop(&mut self) {
        self.controller.send(Msg::Released(self.pod));
    }
}

#[async_trait::async_trait]
impl Backend for Timed {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn notice(&self) -> Option<String> {
        self.inner.notice()
    }

    fn unsupported(&self, spec: &valet_backend::PodSpec) -> Vec<String> {
        self.inner.unsupported(spec)
    }

    async fn provision(&self, req: &ProvisionRequest) -> Result<Box<dyn Pod>, BackendError> {
        let c = &self.controller;
        let pod = c
            .inner
            .next_pod
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let placement = Placement {
            controller: c.clone(),
            pod,
        };
        let (reply, placed) = tokio::sync::oneshot::channel();
        c.send(Msg::Demand {
            demand: valet_sched::PodDemand {
                pod,
                build: self.build,
                backend: self.kind.clone(),
                job: req.job.clone(),
                label: req.label.clone(),
                resources: valet_sched::Resources {
                    cpu_millis: req.demand.cpu_millis,
                    memory_bytes: req.demand.memory_bytes,
                },
            },
            reply,
        });
        let placed = tokio::select! {
            r = placed => r,
            _ = self.cancel.cancelled() => {
                return Err(BackendError::Unavailable(
                    "the build was stopped while its pod waited for a place".into(),
                ));
            }
        };
        match placed {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => return Err(BackendError::Rejected(reason)),
            Err(_) => {
                return Err(BackendError::Unavailable(
                    "the controller is stopping".into(),
                ));
            }
        }
        req.events.phase_at(
            "",
            valet_backend::PodPhase::Placed,
            Some(format!("a place on the {} backend", self.kind)),
        );
        let t = Instant::now();
        let pod = self.inner.provision(req).await?;
        self.controller.inner.metrics.pod_ready.observe(t.elapsed());
        Ok(Box::new(GatedPod {
            inner: pod,
            gate: self.gate.clone(),
            _placement: placement,
        }))
    }
}

struct GatedPod {
    inner: Box<dyn Pod>,
    gate: Gate,
    _placement: Placement,
}

#[async_trait::async_trait]
impl Pod for GatedPod {
    fn id(&self) -> &str {
        self.inner.id()
    }

    fn workspace(&self) -> PathBuf {
        self.inner.workspace()
    }

    fn host_files(&self) -> bool {
        self.inner.host_files()
    }

    fn runner(&self, container: &str) -> Result<Arc<dyn StepRunner>, BackendError> {
        Ok(Arc::new(GatedRunner {
            inner: self.inner.runner(container)?,
            gate: self.gate.clone(),
        }))
    }

    async fn teardown(&self) -> Result<(), BackendError> {
        self.inner.teardown().await
    }
}

struct GatedRunner {
    inner: Arc<dyn StepRunner>,
    gate: Gate,
}

#[async_trait::async_trait]
impl StepRunner for GatedRunner {
    async fn start(&self, cmd: valet_backend::Command) -> Result<Execution, BackendError> {
        self.gate.flush().await;
        self.inner.start(cmd).await
    }
}

async fn read_pipeline(path: &Path) -> Result<String, String> {
    let meta = tokio::fs::metadata(path)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                "no such file in the repository at this commit".to_string()
            }
            _ => e.to_string(),
        })?;
    if meta.len() > MAX_PIPELINE_BYTES {
        return Err(format!(
            "it is {} bytes, more than the limit of {MAX_PIPELINE_BYTES}",
            meta.len()
        ));
    }
    let bytes = tokio::fs::read(path).await.map_err(|e| e.to_string())?;
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "it is not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })
}

struct Compiled {
    source: SourceFile,
    script: Option<valet_dsl::ast::Script>,
    graph: Option<valet_plan::model::JobGraph>,
    diagnostics: Vec<Diagnostic>,
}

/// Parses and plans on a thread with a large stack: both recurse once per nesting level,
/// and the language's limits are sized for 64 MiB (as in `valet run`).
async fn compile(source: SourceFile) -> Compiled {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("compile".into())
        .stack_size(64 * 1024 * 1024)
        .spawn(move || {
            let c = valet_plan::compile(&source);
            let _ = tx.send(Compiled {
                source,
                script: c.script,
                graph: c.graph,
                diagnostics: c.diagnostics,
            });
        });
    let failed = |why: &str| Compiled {
        source: SourceFile::new("pipeline", ""),
        script: None,
        graph: None,
        diagnostics: vec![Diagnostic::error(
            "internal",
            valet_dsl::Span::new(0, 0),
            format!("the pipeline could not be compiled: {why}"),
        )],
    };
    match spawned {
        Ok(_) => rx
            .await
            .unwrap_or_else(|_| failed("the compile thread ended early")),
        Err(e) => failed(&format!("no compile thread: {e}")),
    }
}

struct Checkout {
    commit: String,
    branch: Option<String>,
}

/// How git reaches a repository without its credentials on a command line or on disk:
/// the URL without them, and the environment that gives them to git's credential
/// machinery for that URL's host only (a helper configured through `GIT_CONFIG_COUNT`,
/// reading the user and password from variables of git's own environment). Other users
/// can read a process's arguments; nobody but its user reads its environment.
struct GitAuth {
    url: String,
    env: Vec<(String, String)>,
}

impl GitAuth {
    fn new(url: &str) -> GitAuth {
        let userinfo = crate::config::url_userinfo(url).filter(|u| !u.is_empty());
        let http = url.starts_with("https://") || url.starts_with("http://");
        let Some(userinfo) = userinfo.filter(|_| http) else {
            // No credentials (ssh names only a user, which is no secret).
            return GitAuth {
                url: url.to_string(),
                env: Vec::new(),
            };
        };
        let bare = crate::config::url_without_userinfo(url);
        let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
        // `scheme://host[:port]`: git asks this helper for that host and no other (a
        // redirect elsewhere gets nothing).
        let (scheme, rest) = bare.split_once("://").unwrap_or(("https", &bare));
        let host = &rest[..rest.find('/').unwrap_or(rest.len())];
        let helper = "!f() { test \"$1\" = get || exit 0; printf 'username=%s\\npassword=%s\\n' \"$VALET_GIT_USERNAME\" \"$VALET_GIT_PASSWORD\"; }; f";
        let env = vec![
            ("GIT_CONFIG_COUNT".into(), "1".into()),
            (
                "GIT_CONFIG_KEY_0".into(),
                format!("credential.{scheme}://{host}.helper"),
            ),
            ("GIT_CONFIG_VALUE_0".into(), helper.into()),
            ("VALET_GIT_USERNAME".into(), percent_decode(user)),
            ("VALET_GIT_PASSWORD".into(), percent_decode(password)),
        ];
        GitAuth { url: bare, env }
    }
}

/// `%XX` escapes of a URL's user and password decoded (a token may hold `@` or `:`).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Clones `url` into `dir` and checks out what the build names: its commit (fetching its
/// ref when the commit is not on a branch), else its ref, else its branch, else the
/// remote's default branch. The URL's credentials never reach git's arguments nor the
/// clone's `.git/config` (see [`GitAuth`]).
async fn checkout_repo(url: &str, dir: &Path, b: &BuildRow) -> Result<Checkout, String> {
    if let Some(parent) = dir.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    let auth = GitAuth::new(url);
    let env = auth.env.as_slice();
    let dir_s = dir.display().to_string();
    git(
        None,
        &["clone", "--quiet", "--no-checkout", "--", &auth.url, &dir_s],
        env,
    )
    .await?;
    let repo = Some(dir);
    let rev = if let Some(commit) = &b.commit {
        let present = git(
            repo,
            &["cat-file", "-e", &format!("{commit}^{{commit}}")],
            env,
        )
        .await
        .is_ok();
        if !present {
            match &b.git_ref {
                Some(r) => {
                    git(repo, &["fetch", "--quiet", "origin", r], env).await?;
                }
                None => return Err(format!("commit {commit} is not in {}", auth.url)),
            }
        }
        commit.clone()
    } else if let Some(r) = &b.git_ref {
        git(repo, &["fetch", "--quiet", "origin", r], env).await?;
        "FETCH_HEAD".into()
    } else if let Some(branch) = &b.branch {
        format!("refs/remotes/origin/{branch}")
    } else {
        "HEAD".into()
    };
    git(
        repo,
        &[
            "-c",
            "advice.detachedHead=false",
            "checkout",
            "--quiet",
            "--detach",
            &rev,
            "--",
        ],
        env,
    )
    .await?;
    let commit = git(repo, &["rev-parse", "HEAD"], env).await?;
    let branch = match &b.branch {
        Some(_) => None,
        None => git(repo, &["rev-parse", "--abbrev-ref", "origin/HEAD"], env)
            .await
            .ok()
            .map(|s| s.strip_prefix("origin/").unwrap_or(&s).to_string()),
    };
    Ok(Checkout { commit, branch })
}

/// `text` without the credentials of `url` (git may quote the URL in its errors).
fn scrub(text: &str, url: &str) -> String {
    match crate::config::url_userinfo(url).filter(|u| !u.is_empty()) {
        Some(userinfo) => text
            .replace(url, &crate::config::redact_url(url))
            .replace(userinfo, "***"),
        None => text.to_string(),
    }
}

/// Runs `git` (in `dir`, with `env` added), its output trimmed; an error carries git's
/// own words.
async fn git(
    dir: Option<&Path>,
    args: &[&str],
    env: &[(String, String)],
) -> Result<String, String> {
    let mut cmd = tokio::process::Command::new("git");
    if let Some(d) = dir {
        cmd.arg("-C").arg(d);
    }
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(GIT_TIMEOUT, cmd.output())
        .await
        .map_err(|_| format!("git {} took more than {GIT_TIMEOUT:?}", args[0]))?
        .map_err(|e| format!("cannot run git: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        let mut err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if err.len() > 2000 {
            let mut cut = 2000;
            while !err.is_char_boundary(cut) {
                cut -= 1;
            }
            err.truncate(cut);
        }
        Err(format!("git {} ({}): {err}", args[0], out.status))
    }
}

type StageKey = (Vec<String>, Option<String>, Option<String>);

/// Where the events of a running build go, in order, on a blocking thread.
pub(crate) struct Sink {
    id: BuildId,
    store: Arc<Store>,
    controller: Controller,
    log: BuildLog,
    live: Arc<Live>,
    next_seq: i64,
    jobs: HashMap<String, Vec<i64>>,
    /// Open stages by (path, parallel branch, job): the `seq`s of their rows.
    stages: HashMap<StageKey, Vec<i64>>,
    failed_writes: u64,
    /// Open tracing spans of jobs and steps (children of the build's span), closed when
    /// they finish so a subscriber sees their durations.
    spans: HashMap<String, tracing::Span>,
    /// Output is written to the log a whole line at a time.
    lines: valet_runtime::Lines,
    /// A job's pod is queued (and placed) before it has an id: those phases are recorded
    /// with the pod's first phase that names it, under its id.
    queued: HashMap<String, Vec<Record>>,
}

impl Sink {
    fn new(c: &Controller, id: BuildId, log: BuildLog, live: Arc<Live>) -> Sink {
        Sink {
            id,
            store: c.inner.store.clone(),
            controller: c.clone(),
            log,
            live,
            next_seq: 1,
            jobs: HashMap::new(),
            stages: HashMap::new(),
            failed_writes: 0,
            spans: HashMap::new(),
            lines: valet_runtime::Lines::default(),
            queued: HashMap::new(),
        }
    }

    fn publish(&mut self, json: String) {
        if let Err(err) = self.log.event(&json) {
            self.write_failed(&err);
        }
        self.live.push(json.into());
    }

    fn write_failed(&mut self, err: &dyn std::fmt::Display) {
        self.failed_writes += 1;
        if self.failed_writes <= 3 {
            tracing::error!(build = self.id, error = %err, "cannot record a build event");
        }
    }

    fn record(&mut self, r: Record) {
        if let Err(err) = self.store.record(self.id, &r) {
            self.write_failed(&err);
        }
    }

    /// A controller event (not the runtime's): `build_status`.
    fn status(&mut self, v: serde_json::Value) {
        self.publish(v.to_string());
    }

    /// A line of the controller in the build's log (and stream, as log output), never
    /// capped away.
    fn line(&mut self, text: &str) {
        let written = self.log.line(text);
        self.published(written);
    }

    /// Text of the build itself that may be long (the pipeline's diagnostics): capped like
    /// other build output.
    fn text(&mut self, text: &str) {
        let written = self.log.append(None, "", text);
        self.published(written);
    }

    /// What the log kept of the build's own text, out to the live stream.
    fn published(&mut self, written: Result<Option<String>, valet_store::StoreError>) {
        match written {
            Ok(Some(kept)) => {
                let ev = Event::Output {
                    step: None,
                    stream: Stream::Log,
                    text: kept,
                    place: Default::default(),
                };
                if let Ok(json) = serde_json::to_string(&ev) {
                    self.publish(json);
                }
            }
            Ok(None) => {}
            Err(err) => self.write_failed(&err),
        }
    }

    fn seq(&mut self) -> i64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    /// One whole line (or a step's last, unfinished one) of output: into the capped log and
    /// out to the live stream.
    fn output(
        &mut self,
        step: Option<u64>,
        stream: Stream,
        place: &valet_runtime::Place,
        line: &str,
    ) {
        self.output_lines(step, stream, place, std::slice::from_ref(&line.to_string()));
    }

    /// Writes whole lines of one step and stream to the logs, and what was kept of them
    /// as one event: a step printing many short lines costs the events file one event per
    /// chunk it wrote, not one per line, so events stay a small multiple of the log.
    fn output_lines(
        &mut self,
        step: Option<u64>,
        stream: Stream,
        place: &valet_runtime::Place,
        lines: &[String],
    ) {
        let prefix = place
            .branch
            .as_ref()
            .map(|b| format!("[{b}] "))
            .unwrap_or_default();
        let mut text = String::new();
        for line in lines {
            match self.log.append(step.map(|s| s as i64), &prefix, line) {
                Ok(Some(kept)) => text.push_str(&kept),
                Ok(None) => {}
                Err(err) => {
                    self.write_failed(&err);
                    return;
                }
            }
        }
        if text.is_empty() {
            return;
        }
        let ev = Event::Output {
            step,
            stream,
            text,
            place: place.clone(),
        };
        if let Ok(json) = serde_json::to_string(&ev) {
            self.publish(json);
        }
    }

    fn flush(&mut self, leftovers: Vec<valet_runtime::Leftover>) {
        for l in leftovers {
            let place = valet_runtime::Place {
                branch: l.branch,
                ..Default::default()
            };
            self.output(l.step, l.stream, &place, &l.text);
        }
    }

    fn event(&mut self, ev: &Event) {
        let now = now_ms();
        match ev {
            Event::Output {
                step,
                stream,
                text,
                place,
            } => {
                let lines = self
                    .lines
                    .push(*step, *stream, place.branch.as_deref(), text);
                self.output_lines(*step, *stream, place, &lines);
                return;
            }
            Event::StepFinished { id, .. } => {
                let left = self.lines.finish_step(*id);
                self.flush(left);
            }
            Event::BuildFinished { .. } => {
                let left = self.lines.finish_all();
                self.flush(left);
            }
            _ => {}
        }
        match ev {
            Event::Output { .. } => {}
            Event::Notice { message, .. } => {
                let _ = self.log.line(&format!("[{message}]"));
            }
            Event::JobStarted {
                job,
                pod,
                label,
                place,
                ..
            } => {
                let seq = self.seq();
                self.jobs.entry(job.clone()).or_default().push(seq);
                let span = tracing::info_span!("job", job = %job, pod = %pod);
                span.in_scope(|| tracing::debug!("pod ready"));
                self.spans.insert(format!("job {job}"), span);
                self.record(Record::JobStarted {
                    seq,
                    name: job.clone(),
                    pod: pod.clone(),
                    label: label.clone(),
                    branch: place.branch.clone(),
                    started_ms: now,
                });
            }
            Event::JobFinished {
                job,
                result,
                duration_ms,
            } => {
                if let Some(span) = self.spans.remove(&format!("job {job}")) {
                    span.in_scope(
                        || tracing::debug!(result = %result, duration_ms, "job finished"),
                    );
                }
                if let Some(seq) = self.jobs.get_mut(job).and_then(Vec::pop) {
                    self.record(Record::JobFinished {
                        seq,
                        result: result.as_str().into(),
                        duration_ms: *duration_ms as i64,
                    });
                }
            }
            Event::StageStarted {
                name,
                path,
                parallel_branch,
                place,
            } => {
                let seq = self.seq();
                self.stages
                    .entry((path.clone(), place.branch.clone(), place.job.clone()))
                    .or_default()
                    .push(seq);
                self.record(Record::StageStarted {
                    seq,
                    name: name.clone(),
                    path: path.clone(),
                    parallel_branch: *parallel_branch,
                    job: place.job.clone(),
                    branch: place.branch.clone(),
                    started_ms: now,
                });
            }
            Event::StageFinished {
                path,
                result,
                skipped,
                duration_ms,
                place,
                ..
            } => {
                let key = (path.clone(), place.branch.clone(), place.job.clone());
                let seq = self.stages.get_mut(&key).and_then(Vec::pop);
                let seq = match seq {
                    Some(s) => s,
                    // A stage that never started (skipped): a row of its own.
                    None => {
                        let seq = self.seq();
                        self.record(Record::StageStarted {
                            seq,
                            name: path.last().cloned().unwrap_or_default(),
                            path: path.clone(),
                            parallel_branch: false,
                            job: place.job.clone(),
                            branch: place.branch.clone(),
                            started_ms: now,
                        });
                        seq
                    }
                };
                self.record(Record::StageFinished {
                    seq,
                    result: result.as_str().into(),
                    skipped: *skipped,
                    duration_ms: *duration_ms as i64,
                });
            }
            Event::StepStarted {
                id,
                step,
                summary,
                place,
            } => {
                let parent = place
                    .job
                    .as_ref()
                    .and_then(|j| self.spans.get(&format!("job {j}")))
                    .cloned()
                    .unwrap_or_else(tracing::Span::current);
                let span = tracing::info_span!(parent: &parent, "step", id, step = %step);
                span.in_scope(|| tracing::debug!(summary = %summary, "step started"));
                self.spans.insert(format!("step {id}"), span);
                self.record(Record::StepStarted {
                    step_id: *id as i64,
                    step: step.clone(),
                    summary: summary.clone(),
                    job: place.job.clone(),
                    branch: place.branch.clone(),
                    stage: place.stage.clone(),
                    container: place.container.clone(),
                    started_ms: now,
                })
            }
            Event::StepFinished {
                id,
                result,
                error,
                duration_ms,
                ..
            } => {
                if let Some(span) = self.spans.remove(&format!("step {id}")) {
                    span.in_scope(
                        || tracing::debug!(result = %result, duration_ms, "step finished"),
                    );
                }
                // The step's log is complete (written through) before its result is committed.
                let (bytes, truncated) = self.log.finish_step(*id as i64);
                self.record(Record::StepFinished {
                    step_id: *id as i64,
                    result: result.as_str().into(),
                    error: error.clone(),
                    duration_ms: *duration_ms as i64,
                    log_bytes: bytes as i64,
                    log_truncated: truncated,
                });
                self.controller
                    .inner
                    .metrics
                    .step_duration
                    .observe(Duration::from_millis(*duration_ms));
            }
            Event::PodPhase {
                job,
                pod,
                backend,
                phase,
                at_ms,
                took_ms,
                detail,
            } => {
                tracing::debug!(job = %job, pod = %pod, phase = phase.as_str(), at_ms, took_ms, "pod phase");
                let rec = Record::PodPhase {
                    pod: pod.clone(),
                    job: job.clone(),
                    backend: backend.clone(),
                    phase: phase.as_str().into(),
                    at_ms: *at_ms as i64,
                    took_ms: *took_ms as i64,
                    detail: detail.clone(),
                    recorded_ms: now,
                };
                if pod.is_empty() {
                    self.queued.entry(job.clone()).or_default().push(rec);
                } else {
                    for earlier in self.queued.remove(job).unwrap_or_default() {
                        if let Record::PodPhase {
                            phase,
                            at_ms,
                            took_ms,
                            detail,
                            recorded_ms,
                            ..
                        } = earlier
                        {
                            self.record(Record::PodPhase {
                                pod: pod.clone(),
                                job: job.clone(),
                                backend: backend.clone(),
                                phase,
                                at_ms,
                                took_ms,
                                detail,
                                recorded_ms,
                            });
                        }
                    }
                    self.record(rec);
                }
                if *phase != valet_backend::PodPhase::Queued {
                    self.controller.inner.metrics.pod_phase(
                        backend,
                        *phase,
                        Duration::from_millis(*took_ms),
                    );
                }
            }
            Event::PodProgress { .. } => {}
            Event::BuildStarted { .. } | Event::BuildFinished { .. } => {}
        }
        if let Ok(json) = serde_json::to_string(ev) {
            self.publish(json);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(a: &'a GitAuth, k: &str) -> Option<&'a str> {
        a.env
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn credentials_of_an_http_url_go_to_the_environment_for_that_host_only() {
        let a = GitAuth::new("https://x-access-token:t%40k:en@git.example.com:8443/a/b.git");
        assert_eq!(a.url, "https://git.example.com:8443/a/b.git");
        assert_eq!(env(&a, "VALET_GIT_USERNAME"), Some("x-access-token"));
        assert_eq!(env(&a, "VALET_GIT_PASSWORD"), Some("t@k:en"));
        assert_eq!(
            env(&a, "GIT_CONFIG_KEY_0"),
            Some("credential.https://git.example.com:8443.helper")
        );
        assert_eq!(env(&a, "GIT_CONFIG_COUNT"), Some("1"));
        // The helper names the variables, never the values.
        assert!(!env(&a, "GIT_CONFIG_VALUE_0").unwrap().contains("t@k"));

        // A token alone is the user name.
        let a = GitAuth::new("https://ghp_abc@github.com/a/b");
        assert_eq!(a.url, "https://github.com/a/b");
        assert_eq!(env(&a, "VALET_GIT_USERNAME"), Some("ghp_abc"));
        assert_eq!(env(&a, "VALET_GIT_PASSWORD"), Some(""));

        // Nothing to hide: the URL as given, no environment.
        for url in [
            "https://github.com/a/b",
            "ssh://git@github.com/a/b",
            "git@github.com:a/b.git",
            "file:///srv/a",
        ] {
            let a = GitAuth::new(url);
            assert_eq!((a.url.as_str(), a.env.len()), (url, 0), "{url}");
        }
    }

    #[test]
    fn percent_escapes_are_decoded_and_a_stray_percent_is_kept() {
        assert_eq!(percent_decode("a%3Ab%40c"), "a:b@c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
