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
use valet_backend::PodPhase;
use valet_backend::owner::Scope;
use valet_backends::BackendConfig;
use valet_runtime::{BuildResult, Event, NoticeLevel, RunOptions, ScmInfo, Secrets};

use super::gc::removed_lines;

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
                   other than a letter or digit turned into `_` (npm-token -> VALET_SECRET_NPM_TOKEN);
                   valet takes them out of its environment at start: steps never see them there
  Bound values, and their base64 forms, are shown as **** in all output.

On the local backend, container images are not used: every step runs as a host process, in a
workspace under the temp directory that is removed at the end unless --keep is given.";

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
    /// Where pods run: `local` (host processes, no engine needed) or `docker` (containers
    /// on the local Docker engine, one pod = containers sharing a network namespace and a
    /// workspace volume, with the template's CPU and memory limits).
    #[arg(long, default_value = "local", value_name = "KIND",
          value_parser = clap::builder::PossibleValuesParser::new(valet_backends::KINDS))]
    backend: String,
    /// A setting of the backend, e.g. `--backend-opt warm_pool=2` (docker) or
    /// `--backend-opt root=/srv/valet` (local); repeat for more.
    #[arg(long = "backend-opt", value_name = "KEY=VALUE")]
    backend_opts: Vec<String>,
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
    /// Let a template's `privileged: true` through (refused by default: a privileged
    /// container owns the host).
    #[arg(long)]
    allow_privileged: bool,
    /// Refuse containers that would run as root (a template must set `runAsUser`).
    #[arg(long)]
    require_non_root: bool,
    /// The CPU limit of containers whose template sets none, in millicores (`0`: none).
    #[arg(long, value_name = "MILLICORES", default_value_t = valet_backend::policy::DEFAULT_CPU_LIMIT_MILLIS,
          value_parser = clap::value_parser!(u64).range(0..=valet_backend::policy::MAX_CPU_LIMIT_MILLIS))]
    default_cpu_limit: u64,
    /// The most processes (and threads) a container may hold at once (32 to 4194304), so a
    /// fork bomb fills its own container, not the host.
    #[arg(long, value_name = "N", default_value_t = valet_backend::policy::DEFAULT_PIDS_LIMIT,
          value_parser = clap::value_parser!(u64).range(valet_backend::policy::MIN_PIDS_LIMIT..=valet_backend::policy::MAX_PIDS_LIMIT))]
    default_pids_limit: u64,
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

/// The backend the flags ask for: `--backend`, its `--backend-opt`s, and the shorthands
/// `--keep` (local) and `--warm-pool` / `$VALET_WARM_POOL` (docker).
fn backend_config(args: &Args) -> anyhow::Result<BackendConfig> {
    let mut opts = args.backend_opts.clone();
    let has = |k: &str| opts.iter().any(|o| o.starts_with(&format!("{k}=")));
    match args.backend.as_str() {
        "local" if args.keep && !has("keep") => opts.push("keep=true".into()),
        "docker" if !has("warm_pool") => {
            let warm_pool = match args.warm_pool {
                Some(n) => n,
                None => match std::env::var("VALET_WARM_POOL") {
                    Ok(v) => v.trim().parse().with_context(|| {
                        format!("VALET_WARM_POOL={v:?} is not a number of pods")
                    })?,
                    Err(_) => 0,
                },
            };
            opts.push(format!("warm_pool={warm_pool}"));
        }
        _ => {}
    }
    Ok(BackendConfig::from_options(&args.backend, &opts)?)
}

/// Builds the backend and removes what killed runs left on it (saying so only when there
/// was something).
async fn start_backend(
    config: &BackendConfig,
) -> Result<Arc<dyn valet_backend::Backend>, valet_backend::BackendError> {
    let backend = config.build().await?;
    match backend.collect_orphans(&Scope::Orphans).await {
        Ok(r) if !r.is_empty() => eprint!(
            "valet: removed what earlier runs left behind:\n{}",
            removed_lines(&r)
        ),
        Ok(_) => {}
        Err(e) => eprintln!("valet: could not look for what earlier runs left behind: {e}"),
    }
    Ok(backend)
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

/// `secrets`: the `VALET_SECRET_*` variables `main` took out of the environment.
pub(crate) fn run(args: Args, secrets: Vec<(String, String)>) -> anyhow::Result<ExitCode> {
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
    match run_inner(args, secrets) {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            Ok(ExitCode::from(EXIT_ERROR))
        }
    }
}

fn run_inner(args: Args, env_secrets: Vec<(String, String)>) -> anyhow::Result<ExitCode> {
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
    let mut secrets = Secrets::from_env(env_secrets);
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
        container_policy: valet_backend::ContainerPolicy {
            allow_privileged: args.allow_privileged,
            require_non_root: args.require_non_root,
            default_cpu_limit_millis: (args.default_cpu_limit > 0)
                .then_some(args.default_cpu_limit),
            default_pids_limit: args.default_pids_limit,
        },
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
        .thread_stack_size(valet_runtime::THREAD_STACK_SIZE)
        .enable_all()
        .build()?;
    let config = match backend_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("valet: {e}");
            return Ok(ExitCode::from(EXIT_ERROR));
        }
    };
    let backend = match rt.block_on(start_backend(&config)) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("valet: the {} backend is not available: {e}", config.kind());
            return Ok(ExitCode::from(EXIT_ERROR));
        }
    };
    let format = args.output;
    let keep = args.keep;
    // The build is driven from a thread with the interpreter's stack (the main thread's is
    // smaller), as are the runtime's workers.
    let drive = |f| {
        std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("valet-build".into())
                .stack_size(valet_runtime::THREAD_STACK_SIZE)
                .spawn_scoped(s, || rt.block_on(f))
                .expect("a thread for the build")
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    };
    let outcome = drive(async {
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        let cancel = valet_runtime::CancellationToken::new();
        let c = cancel.clone();
        let b = backend.clone();
        tokio::spawn(async move {
            if interrupted().await {
                eprintln!(
                    "\nvalet: interrupted: aborting the build (Ctrl-C again to quit at once)"
                );
                c.cancel();
                if interrupted().await {
                    // Quitting at once still removes this run's pods, briefly bounded.
                    let _ = tokio::time::timeout(
                        Duration::from_secs(5),
                        b.collect_orphans(&Scope::mine()),
                    )
                    .await;
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
        // The backend's pools, then anything of this process a teardown could not remove.
        if let Err(e) = backend.shutdown().await {
            eprintln!("valet: stopping the {} backend: {e}", backend.name());
        }
        match backend.collect_orphans(&Scope::mine()).await {
            Ok(r) if !r.is_empty() => {
                eprint!("valet: removed what the build left:\n{}", removed_lines(&r))
            }
            Ok(_) => {}
            Err(e) => eprintln!("valet: removing what the build left: {e}"),
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
    let mut pods = PodTimes::default();
    while let Some(ev) = rx.recv().await {
        if format == OutputFormat::Json {
            if let Ok(line) = serde_json::to_string(&ev) {
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
            continue;
        }
        match &ev {
            Event::PodProgress { pod, message, .. } => {
                if pod.is_empty() {
                    eprintln!("valet: {message}");
                } else {
                    eprintln!("valet: pod {pod}: {message}");
                }
            }
            Event::PodPhase {
                job,
                pod,
                phase,
                at_ms,
                took_ms,
                detail,
                ..
            } => pods.record(job, pod, *phase, *at_ms, *took_ms, detail.as_deref()),
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
                containers,
            } => {
                // Pod start-up goes to stderr, apart from the build's log.
                if let Some(ms) = pods.ready_ms(job) {
                    let n = containers.len();
                    eprintln!(
                        "valet: pod {pod} ready in {} ({n} container{}{})",
                        fmt_duration(ms),
                        if n == 1 { "" } else { "s" },
                        if pods.warm(job) {
                            ", from the warm pool"
                        } else {
                            ""
                        }
                    );
                }
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
                pods.summary(&mut out);
                let _ = writeln!(out, "Build {result} in {}", fmt_duration(*duration_ms));
            }
        }
        let _ = out.flush();
    }
    if let Some(t) = ticker {
        t.abort();
    }
}

/// A phase a pod reached, the milliseconds since the phase before, and the backend's detail.
type PhaseTime = (PodPhase, u64, Option<String>);

/// Each job's pod start, phase by phase, for the closing summary.
#[derive(Default)]
struct PodTimes {
    /// Job → pod, and its phases in order.
    jobs: IndexMap<String, (String, Vec<PhaseTime>)>,
}

impl PodTimes {
    fn record(
        &mut self,
        job: &str,
        pod: &str,
        phase: PodPhase,
        _at_ms: u64,
        took_ms: u64,
        detail: Option<&str>,
    ) {
        let entry = self.jobs.entry(job.to_string()).or_default();
        if !pod.is_empty() {
            entry.0 = pod.to_string();
        }
        // A job's pod may be made again (a `node` in a loop): the new queue starts afresh.
        if phase == PodPhase::Queued {
            entry.1.clear();
        }
        entry.1.push((phase, took_ms, detail.map(str::to_string)));
    }

    /// From asking for the job's pod to its agents answering.
    fn ready_ms(&self, job: &str) -> Option<u64> {
        let (_, phases) = self.jobs.get(job)?;
        phases
            .iter()
            .take_while(|p| p.0 <= PodPhase::AgentConnected)
            .map(|p| p.1)
            .sum::<u64>()
            .into()
    }

    fn warm(&self, job: &str) -> bool {
        self.jobs.get(job).is_some_and(|(_, phases)| {
            phases
                .iter()
                .any(|p| p.0 == PodPhase::Placed && p.2.as_deref() == Some("warm pool"))
        })
    }

    /// `Pod start` lines: each phase with the time it took since the one before.
    fn summary(&self, out: &mut impl std::io::Write) {
        if self.jobs.is_empty() {
            return;
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "Pod start (since the phase before): placed, created, started, agent connected, first step byte"
        );
        for (job, (pod, phases)) in &self.jobs {
            let parts: Vec<String> = phases
                .iter()
                .filter(|p| p.0 != PodPhase::Queued)
                .map(|(phase, ms, _)| format!("{} +{}", phase_name(*phase), fmt_duration(*ms)))
                .collect();
            let total: u64 = phases.iter().map(|p| p.1).sum();
            let _ = writeln!(
                out,
                "{job} {pod}: {} (total {})",
                parts.join(", "),
                fmt_duration(total)
            );
        }
    }
}

fn phase_name(p: PodPhase) -> &'static str {
    match p {
        PodPhase::Queued => "queued",
        PodPhase::Placed => "placed",
        PodPhase::Created => "created",
        PodPhase::Started => "started",
        PodPhase::AgentConnected => "agent",
        PodPhase::FirstStepByte => "first byte",
    }
}

fn prefix(branch: &Option<String>) -> String {
    match branch {
        Some(b) => format!("[{b}] "),
        None => String::new(),
    }
}
