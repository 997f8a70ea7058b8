//! `valet run FILE`: checks and plans a pipeline, then runs it on a backend.
//!
//! The terminal side of a build: renders the runtime's events as text (stage headers,
//! output lines prefixed by their parallel branch, a line on stderr every few seconds while
//! a long step runs, a closing summary of stages) or as JSON lines.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use indexmap::IndexMap;
use valet_runtime::{BuildResult, Event, NoticeLevel, RunOptions, ScmInfo, Secrets};

/// What `valet run --help` says after the options.
pub(crate) const AFTER_HELP: &str = "\
Exit status:
  0  SUCCESS      the build succeeded
  1  FAILURE      a step failed (or `error`, or an uncaught exception)
  2  UNSTABLE     the build was marked unstable (`unstable`, `warnError`, test failures)
  3  ABORTED      the build was interrupted (Ctrl-C, a `timeout`, `input`)
  4  ERROR        the pipeline is invalid (see `valet check`) or the backend failed

Secrets (for `withCredentials` and `credentials()`), first match wins:
  --secrets FILE   JSON: {\"npm-token\": \"s3cr3t\", \"deploy\": {\"username\": \"bot\", \"password\": \"pw\"},
                          \"ssh-key\": {\"username\": \"git\", \"privateKey\": \"-----BEGIN ...\"}}
                   or lines: `npm-token=s3cr3t`, `deploy.username=bot`, `deploy.password=pw` (# comments)
  environment      VALET_SECRET_<ID>=value, VALET_SECRET_<ID>_USERNAME / _PASSWORD / _PRIVATEKEY /
                   _PASSPHRASE, where <ID> is the credential id in upper case with every character
                   other than a letter or digit turned into `_` (npm-token -> VALET_SECRET_NPM_TOKEN)
  Bound values, and their base64 forms, are shown as **** in all output.

On the local backend, container images are not used: every step runs as a host process, in a
workspace under the temp directory that is removed at the end unless --keep is given.";

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum BackendKind {
    /// Host processes in a per-build workspace (no engine needed).
    Local,
    /// Containers on the local Docker engine: one pod = containers sharing a network
    /// namespace and a workspace volume, with the template's CPU and memory limits.
    Docker,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum OutputFormat {
    /// Stage headers, output lines and a closing summary, for a person.
    Text,
    /// One JSON object per event and line, for programs.
    Json,
}

#[derive(clap::Args)]
pub(crate) struct Args {
    /// The pipeline file (a Jenkinsfile).
    #[arg(value_name = "FILE")]
    file: String,
    /// Where pods run.
    #[arg(long, value_enum, default_value = "local")]
    backend: BackendKind,
    /// A build parameter (`params.NAME`); repeat for more.
    #[arg(short = 'p', long = "param", value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// An environment variable for every step (`env.K`); repeat for more. Wins over the
    /// process environment and the build variables (`--env BRANCH_NAME=main`).
    #[arg(long = "env", value_name = "K=V")]
    env: Vec<String>,
    /// Keep the workspaces after the build (their paths are printed).
    #[arg(long)]
    keep: bool,
    /// How events are printed.
    #[arg(long, value_enum, default_value = "text")]
    output: OutputFormat,
    /// Credentials for `withCredentials` (see below for the format).
    #[arg(long, value_name = "FILE")]
    secrets: Option<PathBuf>,
    /// `BUILD_NUMBER`.
    #[arg(long, default_value_t = 1, value_name = "N")]
    build_number: u64,
    /// Where `archiveArtifacts` copies files (default: a new directory under the temp directory).
    #[arg(long, value_name = "DIR")]
    artifacts: Option<PathBuf>,
    /// Docker: keep N ready pods per pod template, so a template used again (by another
    /// `node`, a parallel branch) starts at once (default: $VALET_WARM_POOL, else 0).
    #[arg(long, value_name = "N")]
    warm_pool: Option<usize>,
}

const EXIT_ERROR: u8 = 4;

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn interrupted() -> bool {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            return tokio::signal::ctrl_c().await.is_ok();
        };
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.is_ok(),
            r = term.recv() => r.is_some(),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.is_ok()
    }
}

/// Connects to Docker, checks the base image, removes what killed runs left (saying so only
/// when there was something), and prints pod start-up on stderr.
async fn connect_docker(
    warm_pool: usize,
) -> Result<valet_docker::DockerBackend, valet_backend::BackendError> {
    let d = valet_docker::DockerBackend::connect_ready().await?;
    match d.gc(&valet_docker::gc::Scope::Orphans).await {
        Ok(r) if !r.is_empty() => eprint!(
            "valet: removed what earlier runs left behind:\n{}",
            super::gc::removed_lines(&r)
        ),
        Ok(_) => {}
        Err(e) => eprintln!("valet: could not look for what earlier runs left behind: {e}"),
    }
    Ok(d.with_warm_pool(warm_pool)
        .with_progress(Arc::new(print_progress)))
}

/// Pod start-up on stderr, apart from the build's log on stdout.
fn print_progress(p: &valet_docker::Progress) {
    use valet_docker::Progress;
    match p {
        Progress::Creating {
            pod,
            container,
            image,
        } => eprintln!("valet: pod {pod}: creating container {container} ({image})"),
        Progress::Pulling { image } => eprintln!("valet: pulling image {image}"),
        Progress::Started { pod, container } => {
            eprintln!("valet: pod {pod}: container {container} started")
        }
        Progress::Ready {
            pod,
            containers,
            took,
            warm,
        } => eprintln!(
            "valet: pod {pod} ready in {} ({containers} container{}{})",
            fmt_duration(took.as_millis() as u64),
            if *containers == 1 { "" } else { "s" },
            if *warm { ", from the warm pool" } else { "" }
        ),
    }
}

fn pairs(items: &[String], what: &str) -> anyhow::Result<IndexMap<String, String>> {
    let mut m = IndexMap::new();
    for i in items {
        let (k, v) = i
            .split_once('=')
            .with_context(|| format!("{what} `{i}` is not NAME=VALUE"))?;
        if k.is_empty() {
            anyhow::bail!("{what} `{i}` has no name");
        }
        m.insert(k.to_string(), v.to_string());
    }
    Ok(m)
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    // Traces only when asked for (`RUST_LOG=valet_runtime=info,valet_docker=debug`): the
    // build, job, step and backend spans with their durations, on stderr beside progress.
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .try_init();
    }
    match run_inner(args) {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            Ok(ExitCode::from(EXIT_ERROR))
        }
    }
}

fn run_inner(args: Args) -> anyhow::Result<ExitCode> {
    let compiled = super::compile_file(&args.file)?;
    if !compiled.diagnostics.is_empty() {
        eprint!("{}", compiled.render_diagnostics());
    }
    if compiled.has_errors() {
        eprintln!(
            "{}: not run: the pipeline has errors (exit status {EXIT_ERROR})",
            args.file
        );
        return Ok(ExitCode::from(EXIT_ERROR));
    }
    let (Some(script), Some(graph)) = (compiled.script.as_ref(), compiled.graph.as_ref()) else {
        anyhow::bail!("{}: nothing to run", args.file);
    };
    let mut secrets = Secrets::from_env(std::env::vars());
    if let Some(f) = &args.secrets {
        secrets.load_file(f)?;
    }
    let params = pairs(&args.params, "parameter")?;
    let env = pairs(&args.env, "--env")?;
    let mut opts = RunOptions {
        build_number: args.build_number,
        params,
        env,
        secrets,
        scm: ScmInfo::detect(std::path::Path::new(&args.file)),
        ..RunOptions::default()
    };
    opts.artifacts_dir = Some(args.artifacts.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!(
            "valet-artifacts-{}-{}",
            std::process::id(),
            args.build_number
        ))
    }));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // The Docker backend, also kept as itself: its pool is drained and its leftovers
    // collected when the build ends, however it ends.
    let mut docker: Option<valet_docker::DockerBackend> = None;
    let backend: Box<dyn valet_backend::Backend> = match args.backend {
        BackendKind::Local => Box::new(valet_local::LocalBackend::new(
            std::env::temp_dir(),
            args.keep,
        )),
        BackendKind::Docker => {
            let warm_pool = match args.warm_pool {
                Some(n) => n,
                None => match std::env::var("VALET_WARM_POOL") {
                    Ok(v) => v.trim().parse().with_context(|| {
                        format!("VALET_WARM_POOL={v:?} is not a number of pods")
                    })?,
                    Err(_) => 0,
                },
            };
            match rt.block_on(connect_docker(warm_pool)) {
                Ok(d) => {
                    docker = Some(d.clone());
                    Box::new(d)
                }
                Err(e) => {
                    eprintln!("valet: the docker backend is not available: {e}");
                    return Ok(ExitCode::from(EXIT_ERROR));
                }
            }
        }
    };
    let format = args.output;
    let keep = args.keep;
    let outcome = rt.block_on(async {
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        let cancel = valet_runtime::CancellationToken::new();
        let c = cancel.clone();
        let d = docker.clone();
        tokio::spawn(async move {
            if interrupted().await {
                eprintln!(
                    "\nvalet: interrupted: aborting the build (Ctrl-C again to quit at once)"
                );
                c.cancel();
                if interrupted().await {
                    // Quitting at once still removes this run's pods, briefly bounded.
                    if let Some(d) = d {
                        let own = valet_docker::gc::Scope::Owner(
                            valet_docker::gc::current_owner().to_string(),
                        );
                        let _ = tokio::time::timeout(Duration::from_secs(5), d.gc(&own)).await;
                    }
                    std::process::exit(130);
                }
            }
        });
        let renderer = tokio::spawn(render(rx, format, keep));
        let outcome = valet_runtime::run(
            script,
            &compiled.source,
            graph,
            backend.as_ref(),
            &opts,
            tx,
            cancel,
        )
        .await;
        let _ = renderer.await;
        if let Some(d) = &docker {
            // The pool's pods, then anything of this process a teardown could not remove.
            if let Err(e) = d.shutdown().await {
                eprintln!("valet: draining the warm pool: {e}");
            }
            let own = valet_docker::gc::Scope::Owner(valet_docker::gc::current_owner().to_string());
            match d.gc(&own).await {
                Ok(r) if !r.is_empty() => eprint!(
                    "valet: removed what the build left:\n{}",
                    super::gc::removed_lines(&r)
                ),
                Ok(_) => {}
                Err(e) => eprintln!("valet: removing what the build left: {e}"),
            }
        }
        outcome
    });
    if format == OutputFormat::Text
        && let Some(dir) = &opts.artifacts_dir
        && dir.exists()
    {
        println!("Artifacts: {}", dir.display());
    }
    let code = if outcome.backend_error {
        EXIT_ERROR
    } else {
        match outcome.result {
            BuildResult::Success | BuildResult::NotBuilt => 0,
            BuildResult::Failure => 1,
            BuildResult::Unstable => 2,
            BuildResult::Aborted => 3,
        }
    };
    Ok(ExitCode::from(code))
}

/// Steps that wrap others: the live indication names the step inside instead.
const WRAPPERS: &[&str] = &[
    "timeout",
    "retry",
    "dir",
    "withEnv",
    "withCredentials",
    "catchError",
    "warnError",
    "waitUntil",
    "ansiColor",
    "timestamps",
    "lock",
    "sshagent",
    "wrap",
];

struct Running {
    what: String,
    where_: String,
    since: Instant,
    last_report: Instant,
}

fn fmt_duration(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{}m {:02}s", ms / 60_000, (ms / 1000) % 60)
    }
}

async fn render(mut rx: tokio::sync::mpsc::Receiver<Event>, format: OutputFormat, keep: bool) {
    let running: Arc<Mutex<HashMap<u64, Running>>> = Arc::default();
    let ticker = if format == OutputFormat::Text {
        let running = running.clone();
        Some(tokio::spawn(async move {
            let every = Duration::from_secs(5);
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let mut r = running.lock().unwrap_or_else(|e| e.into_inner());
                for step in r.values_mut() {
                    if step.last_report.elapsed() >= every && step.since.elapsed() >= every {
                        step.last_report = Instant::now();
                        eprintln!(
                            "… still running: {}{} ({} s)",
                            step.what,
                            step.where_,
                            step.since.elapsed().as_secs()
                        );
                    }
                }
            }
        }))
    } else {
        None
    };
    let mut out = std::io::stdout();
    let mut lines = valet_runtime::Lines::default();
    let mut stages: Vec<(String, BuildResult, bool, u64)> = Vec::new();
    while let Some(ev) = rx.recv().await {
        if format == OutputFormat::Json {
            if let Ok(line) = serde_json::to_string(&ev) {
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
            continue;
        }
        match &ev {
            Event::BuildStarted {
                number,
                file,
                backend,
                job_name,
                ..
            } => {
                let _ = writeln!(
                    out,
                    "valet: running {file} ({job_name} #{number}) on the {backend} backend"
                );
            }
            Event::Notice { level, message } => {
                let tag = match level {
                    NoticeLevel::Info => "note",
                    NoticeLevel::Warning => "warning",
                };
                let _ = writeln!(out, "{tag}: {message}");
            }
            Event::JobStarted {
                job,
                pod,
                workspace,
                label,
                place,
                ..
            } => {
                let label = label
                    .as_deref()
                    .map(|l| format!(" (label {l})"))
                    .unwrap_or_default();
                let where_ = if keep {
                    format!(" in {workspace}")
                } else {
                    String::new()
                };
                let _ = writeln!(
                    out,
                    "{}── {job}: pod {pod}{label}{where_}",
                    prefix(&place.branch)
                );
            }
            Event::JobFinished { .. } => {}
            Event::StageStarted {
                name,
                parallel_branch,
                place,
                ..
            } => {
                if *parallel_branch {
                    let _ = writeln!(out, "{}── branch {name}", prefix(&place.branch));
                } else {
                    let _ = writeln!(out, "{}── stage {name}", prefix(&place.branch));
                }
            }
            Event::StageFinished {
                name,
                path,
                parallel_branch,
                result,
                skipped,
                duration_ms,
                place,
            } => {
                let what = if *parallel_branch { "branch" } else { "stage" };
                let how = if *skipped {
                    "skipped".to_string()
                } else {
                    format!("{result} in {}", fmt_duration(*duration_ms))
                };
                let _ = writeln!(out, "{}── {what} {name}: {how}", prefix(&place.branch));
                stages.push((path.join(" / "), *result, *skipped, *duration_ms));
            }
            Event::StepStarted {
                id,
                step,
                summary,
                place,
            } => {
                if !WRAPPERS.contains(&step.as_str())
                    && !matches!(step.as_str(), "echo" | "error" | "unstable")
                {
                    let what = if summary.is_empty() {
                        step.clone()
                    } else {
                        format!("{step} '{summary}'")
                    };
                    let mut where_ = String::new();
                    if let Some(s) = &place.stage {
                        where_.push_str(&format!(" in stage {s}"));
                    }
                    if let Some(b) = &place.branch {
                        where_.push_str(&format!(" [{b}]"));
                    }
                    running.lock().unwrap_or_else(|e| e.into_inner()).insert(
                        *id,
                        Running {
                            what,
                            where_,
                            since: Instant::now(),
                            last_report: Instant::now(),
                        },
                    );
                }
            }
            Event::StepFinished { id, .. } => {
                running.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
                for l in lines.finish_step(*id) {
                    let _ = write!(out, "{}{}", prefix(&l.branch), l.text);
                }
            }
            Event::Output {
                step,
                stream,
                text,
                place,
            } => {
                for line in lines.push(*step, *stream, place.branch.as_deref(), text) {
                    let _ = write!(out, "{}{line}", prefix(&place.branch));
                }
            }
            Event::BuildFinished {
                result,
                duration_ms,
            } => {
                for l in lines.finish_all() {
                    let _ = write!(out, "{}{}", prefix(&l.branch), l.text);
                }
                if !stages.is_empty() {
                    let width = stages
                        .iter()
                        .map(|s| s.0.chars().count())
                        .max()
                        .unwrap_or(5)
                        .max(5);
                    let _ = writeln!(out);
                    let _ = writeln!(out, "{:<width$}  {:<9}  Duration", "Stage", "Result");
                    for (path, r, skipped, ms) in &stages {
                        let r = if *skipped {
                            "skipped".to_string()
                        } else {
                            r.to_string()
                        };
                        let _ = writeln!(out, "{path:<width$}  {r:<9}  {}", fmt_duration(*ms));
                    }
                }
                let _ = writeln!(out, "Build {result} in {}", fmt_duration(*duration_ms));
            }
        }
        let _ = out.flush();
    }
    if let Some(t) = ticker {
        t.abort();
    }
}

fn prefix(branch: &Option<String>) -> String {
    match branch {
        Some(b) => format!("[{b}] "),
        None => String::new(),
    }
}
