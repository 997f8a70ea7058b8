//! Pipeline steps: `sh`, `echo`, `node`, `stage`, `parallel`, `timeout`, `withCredentials`, …
//!
//! Each step takes its evaluated arguments ([`Args`]). Steps that run commands go through
//! the pod's [`StepRunner`](valet_backend::StepRunner); file steps (`writeFile`, `stash`, …)
//! run small commands in the pod too, so that they work the same on every backend.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use indexmap::IndexMap;
use valet_backend::{BackendError, Command, Execution, ExitStatus, Output, StepRunner};
use valet_backend::{PodEvent, PodEvents, PodPhase, ProvisionRequest};
use valet_dsl::Span;
use valet_plan::model::{ContainerSpec, Job, PodSpec};

use crate::event::{BuildResult, Event, NoticeLevel, Stream};
use crate::interp::{Args, BoxFuture, Ctx, Flow, Interp, PodCtx, R, abort, err, fail};
use crate::secrets::StreamMasker;
use crate::value::{ClosureValue, ExcKind, Exception, Obj, Value, lock};

/// Steps that only build a value for another step's arguments.
const VALUE_STEPS: &[&str] = &[
    "string",
    "booleanParam",
    "choice",
    "text",
    "password",
    "file",
    "run",
    "credentials",
    "usernamePassword",
    "usernameColonPassword",
    "sshUserPrivateKey",
    "certificate",
    "containerTemplate",
    "envVar",
    "containerEnvVar",
    "podEnvVar",
    "secretEnvVar",
    "portMapping",
    "emptyDirVolume",
    "hostPathVolume",
    "persistentVolumeClaim",
    "secretVolume",
    "configMapVolume",
    "dynamicPVC",
    "nfsVolume",
    "emptyDirWorkspaceVolume",
    "hostPathWorkspaceVolume",
    "dynamicPVCWorkspaceVolume",
    "buildDiscarder",
    "logRotator",
    "disableConcurrentBuilds",
    "pipelineTriggers",
    "cron",
    "pollSCM",
    "githubPush",
    "upstream",
    "parameters",
    "scmGit",
    "gitUsernamePassword",
    "durabilityHint",
    "disableResume",
    "skipDefaultCheckout",
    "preserveStashes",
    "copyArtifactPermission",
    "rateLimitBuilds",
    "overrideIndexTriggers",
    "githubProjectProperty",
    "authorizationMatrix",
    "gitParameter",
    "validatingString",
    "separator",
    "activeChoice",
    "extendedChoice",
    "GitSCM",
    "always",
    "checkoutToSubdirectory",
    "containerLivenessProbe",
    "count",
    "kubernetesAgent",
    "labelSelector",
    "labelSelectorRequirement",
    "merge",
    "never",
    "newContainerPerStage",
    "nodeAffinity",
    "nodeSelectorRequirement",
    "nodeSelectorTerm",
    "nonresumable",
    "onFailure",
    "override",
    "parallelsAlwaysFailFast",
    "persistentVolumeClaimWorkspaceVolume",
    "podAffinity",
    "podAffinityTerm",
    "podAnnotation",
    "podAntiAffinity",
    "podLabel",
    "quietPeriod",
    "skipStagesAfterUnstable",
    "weightedPodAffinityTerm",
];

/// Steps that wrap a body and add nothing valet needs to do.
const PASS_THROUGH: &[&str] = &[
    "ansiColor",
    "wrap",
    "lock",
    "withMaven",
    "withAnt",
    "withGradle",
    "withPythonEnv",
    "withDockerRegistry",
    "withDockerServer",
    "configFileProvider",
    "throttle",
    "withNPM",
    "gitlabCommitStatus",
    "gitlabBuilds",
    "withSonarQubeEnv",
    "xvfb",
    "withKubeConfig",
    "kubeconfig",
    "withAWS",
    "withKubeCredentials",
    "semaphore",
];

/// Steps that send something somewhere; a local run reports them instead.
const NOTIFY: &[&str] = &[
    "mail",
    "emailext",
    "slackSend",
    "office365ConnectorSend",
    "discordSend",
    "telegramSend",
    "githubNotify",
    "setGitHubPullRequestStatus",
    "updateGitlabCommitStatus",
    "step",
    "publishHTML",
    "recordIssues",
    "jacoco",
    "cobertura",
    "fingerprint",
    "milestone",
    "containerLog",
    "publishChecks",
    "buildName",
    "buildDescription",
    "addBadge",
    "addShortText",
];

fn records(name: &str) -> bool {
    !matches!(
        name,
        "stage"
            | "node"
            | "parallel"
            | "podTemplate"
            | "script"
            | "properties"
            | "isUnix"
            | "pwd"
            | "container"
            | "pipeline"
    ) && !VALUE_STEPS.contains(&name)
}

pub(crate) fn backend_err(e: BackendError) -> Flow {
    Exception {
        class: "valet.BackendException".into(),
        message: e.to_string(),
        kind: ExcKind::Backend,
    }
    .into()
}

fn time_unit(unit: &str, n: f64) -> R<Duration> {
    let secs = match unit.to_ascii_uppercase().as_str() {
        "NANOSECONDS" => n / 1e9,
        "MICROSECONDS" => n / 1e6,
        "MILLISECONDS" => n / 1e3,
        "SECONDS" => n,
        "MINUTES" => n * 60.0,
        "HOURS" => n * 3600.0,
        "DAYS" => n * 86400.0,
        other => {
            return Err(err(
                "java.lang.IllegalArgumentException",
                format!("unknown time unit `{other}`"),
            ));
        }
    };
    Ok(Duration::from_secs_f64(secs.max(0.0)))
}

/// The command that runs a `sh` script: `/bin/sh -xe -c`, as Jenkins does, or the
/// interpreter of a `#!` first line.
pub(crate) fn shell_argv(script: &str) -> Vec<String> {
    if let Some(first) = script.strip_prefix("#!") {
        let line = first.lines().next().unwrap_or("");
        let mut argv: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        if !argv.is_empty() {
            argv.push("-c".into());
            argv.push(script.to_string());
            return argv;
        }
    }
    vec![
        "/bin/sh".into(),
        "-xe".into(),
        "-c".into(),
        script.to_string(),
    ]
}

fn exit_code(s: ExitStatus) -> i64 {
    match s {
        ExitStatus::Code(c) => c as i64,
        ExitStatus::Signal(sig) => 128 + sig as i64,
    }
}

fn summary(name: &str, args: &Args) -> String {
    let first = match name {
        "sh" | "bat" | "powershell" | "pwsh" => args
            .str("label", usize::MAX)
            .or_else(|| args.str("script", 0)),
        "echo" | "error" | "unstable" | "warnError" => args.str("message", 0),
        "writeFile" | "readFile" | "fileExists" => args.str("file", 0),
        "dir" => args.str("path", 0),
        "timeout" => Some(format!(
            "{} {}",
            args.str("time", 0).unwrap_or_default(),
            args.str("unit", usize::MAX)
                .unwrap_or_else(|| "MINUTES".into())
        )),
        "retry" => args.str("count", 0),
        "sleep" => args.str("time", 0),
        "stash" | "unstash" => args.str("name", 0),
        "archiveArtifacts" | "archive" => args
            .str("artifacts", 0)
            .or_else(|| args.str("includes", usize::MAX)),
        _ => args
            .pos
            .first()
            .filter(|v| !matches!(v, Value::Closure(_)))
            .map(Value::display),
    };
    let first = first.unwrap_or_default();
    let line = first.trim().lines().next().unwrap_or("").to_string();
    let more = first.trim().lines().count() > 1;
    let mut s: String = line.chars().take(100).collect();
    if more || line.chars().count() > 100 {
        s.push_str(" …");
    }
    s
}

/// What to do with a command's output.
#[derive(Clone, Copy)]
struct Show {
    stdout: bool,
    stderr: bool,
}

struct Ran {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// The backend's words for a failure (an out-of-memory kill), when it has them.
    reason: Option<String>,
}

/// Of the stderr of a command that is not shown, only this much is kept (for its error).
const STDERR_KEPT: usize = 64 * 1024;

/// Where the stdout of a command that is not shown goes, and how much of it may come: past
/// `limit` the command is stopped and the step fails with `over`.
struct Keep<'f> {
    /// A spool file; `None` keeps it in memory.
    file: Option<&'f mut tokio::fs::File>,
    limit: u64,
    /// The error past the limit, up to the count of bytes seen.
    over: String,
}

impl Keep<'static> {
    fn memory(limit: u64, over: String) -> Self {
        Keep {
            file: None,
            limit,
            over,
        }
    }
}

/// `16 MiB (16777216 bytes)`.
fn limit_text(limit: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    const GIB: u64 = 1024 * MIB;
    let short = match limit {
        b if b >= GIB && b % GIB == 0 => format!("{} GiB", b / GIB),
        b if b >= MIB && b % MIB == 0 => format!("{} MiB", b / MIB),
        b if b >= 1024 && b % 1024 == 0 => format!("{} KiB", b / 1024),
        b => return format!("{b} bytes"),
    };
    format!("{short} ({limit} bytes)")
}

/// A stash: its tar streams (one per group of names) in files of the build's spool
/// directory, removed when the last user of the stash lets go of it.
pub(crate) struct Stash {
    parts: Vec<std::path::PathBuf>,
    bytes: u64,
}

impl Drop for Stash {
    fn drop(&mut self) {
        for p in &self.parts {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Stops listing skipped entries after this many warnings.
const SKIPPED_SHOWN: usize = 10;

/// The next `n` bytes of `file` (fewer at its end).
async fn read_piece(file: &mut tokio::fs::File, n: usize) -> R<Vec<u8>> {
    use tokio::io::AsyncReadExt as _;
    let mut buf = Vec::with_capacity(n);
    file.take(n as u64)
        .read_to_end(&mut buf)
        .await
        .map_err(|e| fail(format!("cannot read the build's spool file: {e}")))?;
    Ok(buf)
}

/// An unpacking of `part` into `dest` on a blocking thread.
async fn unpack_part(
    part: std::path::PathBuf,
    dest: std::path::PathBuf,
) -> Result<crate::archive::Unpacked, String> {
    tokio::task::spawn_blocking(move || {
        let f = std::fs::File::open(&part)
            .map_err(|e| format!("cannot read {}: {e}", part.display()))?;
        crate::archive::unpack(std::io::BufReader::new(f), &dest).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| format!("unpacking failed: {e}"))?
}

fn default_spec() -> PodSpec {
    PodSpec {
        name: "default".into(),
        containers: vec![ContainerSpec {
            name: "default".into(),
            ..Default::default()
        }],
        default_container: "default".into(),
        ..Default::default()
    }
}

impl<'a> Interp<'a> {
    pub(crate) fn step<'s>(
        &'s self,
        ctx: &'s Ctx,
        name: &'s str,
        args: Args,
        span: Span,
    ) -> BoxFuture<'s, R<Value>> {
        Box::pin(async move {
            let unknown =
                valet_plan::unknown_parameters(name, args.named.keys().map(String::as_str));
            if !unknown.is_empty() {
                // Where and how Jenkins says it; the step runs without them.
                self.log(
                    ctx,
                    format!(
                        "WARNING: Unknown parameter(s) found for step '{name}': {}",
                        unknown.join(", ")
                    ),
                )
                .await;
            }
            if !records(name) {
                return self.step_inner(ctx, None, name, args, span).await;
            }
            let id = self.next_id();
            let place = ctx.place();
            let summary = self.masker.mask_str(&summary(name, &args));
            self.emit(Event::StepStarted {
                id,
                step: name.to_string(),
                summary,
                place: place.clone(),
            })
            .await;
            let started = Instant::now();
            let traced = tracing::info_span!("step", id, step = name, build = %self.build_id);
            let r = tracing::Instrument::instrument(
                self.step_inner(ctx, Some(id), name, args, span),
                traced,
            )
            .await;
            let (result, error) = match &r {
                Err(Flow::Throw(e)) => (
                    match e.kind {
                        ExcKind::Abort => BuildResult::Aborted,
                        _ => BuildResult::Failure,
                    },
                    Some(self.masker.mask_str(&e.message)),
                ),
                _ => (BuildResult::Success, None),
            };
            self.emit(Event::StepFinished {
                id,
                step: name.to_string(),
                result,
                error,
                duration_ms: started.elapsed().as_millis() as u64,
                place,
            })
            .await;
            r
        })
    }

    async fn step_inner(
        &self,
        ctx: &Ctx,
        id: Option<u64>,
        name: &str,
        args: Args,
        span: Span,
    ) -> R<Value> {
        match name {
            "echo" => {
                let msg = args.str("message", 0).unwrap_or_default();
                self.log(ctx, msg).await;
                Ok(Value::Null)
            }
            "error" => Err(fail(args.str("message", 0).unwrap_or_default())),
            "sh" => self.sh(ctx, id, &args).await,
            "bat" | "powershell" | "pwsh" => Err(err(
                "valet.UnsupportedException",
                format!("`{name}` runs on Windows agents; the pods of valet are Linux: use `sh`"),
            )),
            "sleep" => {
                let n = args.get("time", 0).and_then(Value::as_f64).unwrap_or(0.0);
                let unit = args
                    .str("unit", usize::MAX)
                    .unwrap_or_else(|| "SECONDS".into());
                let d = time_unit(&unit, n)?;
                self.sleep(ctx, d).await?;
                Ok(Value::Null)
            }
            "isUnix" => Ok(Value::Bool(true)),
            "pwd" => {
                let pod = self.require_pod(ctx, "pwd")?;
                let mut p = self.cwd_path(ctx, &pod).display().to_string();
                if args.flag("tmp") {
                    p.push_str("@tmp");
                }
                Ok(Value::Str(p))
            }
            "dir" => {
                let path = args
                    .str("path", 0)
                    .ok_or_else(|| fail("dir: a path is required"))?;
                let pod = self.require_pod(ctx, "dir")?;
                let rel = join_cwd(ctx.cwd.as_deref(), &path);
                let mut inner = ctx.clone();
                inner.cwd = Some(rel);
                let full = self.cwd_path(&inner, &pod);
                self.helper(
                    ctx,
                    &pod,
                    "mkdir -p -- \"$1\"",
                    &[full.display().to_string()],
                    None,
                )
                .await?;
                self.run_body(&inner, &args.body()).await
            }
            "deleteDir" | "cleanWs" => {
                let pod = self.require_pod(ctx, name)?;
                let target = if name == "cleanWs" {
                    pod.workspace.clone()
                } else {
                    self.cwd_path(ctx, &pod)
                };
                let script = "if [ -d \"$1\" ]; then cd \"$1\" && find . -mindepth 1 -maxdepth 1 -exec rm -rf -- {} +; fi; if [ \"$1\" != \"$2\" ]; then rm -rf -- \"$1\"; fi";
                self.helper(
                    ctx,
                    &pod,
                    script,
                    &[
                        target.display().to_string(),
                        pod.workspace.display().to_string(),
                    ],
                    None,
                )
                .await?;
                Ok(Value::Null)
            }
            "withEnv" => {
                let list = args.get("overrides", 0).cloned().unwrap_or(Value::Null);
                let mut vars = Vec::new();
                for item in self.iterate(&list, span)? {
                    let s = item.display();
                    let (k, v) = s.split_once('=').unwrap_or((&s, ""));
                    vars.push((k.to_string(), v.to_string()));
                }
                let inner = ctx.with_env(vars);
                self.run_body(&inner, &args.body()).await
            }
            "timeout" => self.timeout(ctx, &args).await,
            "retry" => self.retry(ctx, &args).await,
            "waitUntil" => self.wait_until(ctx, &args).await,
            "catchError" | "warnError" => self.catch_error(ctx, name, &args).await,
            "unstable" => {
                let msg = args.str("message", 0).unwrap_or_default();
                self.log(ctx, format!("WARNING: {msg}")).await;
                self.set_stage_result(ctx, BuildResult::Unstable);
                self.set_build_result(BuildResult::Unstable);
                Ok(Value::Null)
            }
            "writeFile" => {
                let file = args
                    .str("file", 0)
                    .ok_or_else(|| fail("writeFile: `file` is required"))?;
                let text = args.str("text", 1).unwrap_or_default();
                let data = match args.str("encoding", usize::MAX).as_deref() {
                    Some(e) if e.eq_ignore_ascii_case("base64") => {
                        use base64::Engine as _;
                        base64::engine::general_purpose::STANDARD
                            .decode(text.trim())
                            .map_err(|e| fail(format!("writeFile: invalid base64: {e}")))?
                    }
                    _ => text.into_bytes(),
                };
                let pod = self.require_pod(ctx, "writeFile")?;
                let path = self.file_path(ctx, &pod, &file);
                self.helper(
                    ctx,
                    &pod,
                    "mkdir -p -- \"$(dirname -- \"$1\")\" && cat > \"$1\"",
                    &[path],
                    Some(data),
                )
                .await?;
                Ok(Value::Null)
            }
            "readFile" => {
                let file = args
                    .str("file", 0)
                    .ok_or_else(|| fail("readFile: `file` is required"))?;
                let pod = self.require_pod(ctx, "readFile")?;
                let data = self.read_pod_file(ctx, &pod, &file, "readFile").await?;
                Ok(Value::Str(
                    match args.str("encoding", usize::MAX).as_deref() {
                        Some(e) if e.eq_ignore_ascii_case("base64") => {
                            use base64::Engine as _;
                            base64::engine::general_purpose::STANDARD.encode(&data)
                        }
                        _ => String::from_utf8_lossy(&data).into_owned(),
                    },
                ))
            }
            "fileExists" => {
                let file = args.str("file", 0).unwrap_or_default();
                let pod = self.require_pod(ctx, "fileExists")?;
                let path = self.file_path(ctx, &pod, &file);
                let r = self
                    .run_helper(ctx, &pod, "test -e \"$1\"", &[path], None)
                    .await?;
                Ok(Value::Bool(r.status.success()))
            }
            "findFiles" => {
                let pod = self.require_pod(ctx, "findFiles")?;
                let glob = args.str("glob", 0).unwrap_or_else(|| "*".into());
                let excludes = args.str("excludes", usize::MAX).unwrap_or_default();
                let files = self
                    .list_files(ctx, &pod, "findFiles", &glob, &excludes, false)
                    .await?;
                Ok(Value::list(
                    files
                        .into_iter()
                        .map(|f| {
                            let name = f.rsplit('/').next().unwrap_or(&f).to_string();
                            Value::map(IndexMap::from([
                                ("name".to_string(), Value::Str(name)),
                                ("path".to_string(), Value::Str(f)),
                                ("directory".to_string(), Value::Bool(false)),
                            ]))
                        })
                        .collect(),
                ))
            }
            "stash" => self.stash(ctx, &args).await,
            "unstash" => self.unstash(ctx, &args).await,
            "archiveArtifacts" | "archive" => self.archive(ctx, &args).await,
            "junit" => self.junit(ctx, &args).await,
            "withCredentials" => self.with_credentials(ctx, &args).await,
            "checkout" => self.checkout(ctx, id, &args).await,
            "git" => {
                let url = args
                    .str("url", 0)
                    .ok_or_else(|| fail("git: `url` is required"))?;
                let branch = args
                    .str("branch", usize::MAX)
                    .unwrap_or_else(|| "master".into());
                self.git_clone(ctx, id, &url, &branch).await
            }
            "node" => {
                let label = args
                    .get("label", 0)
                    .filter(|v| !matches!(v, Value::Null))
                    .map(Value::display);
                let job = self.graph.job_at(span);
                let (inner, started) = self.provision(ctx, job, label).await?;
                let r = self.run_body(&inner, &args.body()).await;
                self.release(&inner, started, &r).await;
                r
            }
            "container" => {
                let cname = args
                    .str("name", 0)
                    .ok_or_else(|| fail("container: a name is required"))?;
                let pod = self.require_pod(ctx, "container")?;
                if !pod.fallback && pod.pod.runner(&cname).is_err() {
                    if pod_spec_unresolved(&pod.spec) {
                        self.notice(
                            NoticeLevel::Warning,
                            format!("container('{cname}') is not among the containers the plan could resolve (the pod comes from a YAML file read at run time); its steps run in `{}`", fallback_container(&pod.spec)),
                        )
                        .await;
                    } else {
                        pod.pod.runner(&cname).map_err(backend_err)?;
                    }
                }
                let mut inner = ctx.clone();
                inner.container = Some(cname);
                self.run_body(&inner, &args.body()).await
            }
            "stage" => {
                let sname = args
                    .str("name", 0)
                    .ok_or_else(|| fail("stage: a name is required"))?;
                self.stage(ctx, &sname, &args.body()).await
            }
            "podTemplate" => {
                let label = args
                    .str("label", usize::MAX)
                    .or_else(|| args.str("name", usize::MAX))
                    .unwrap_or_else(|| format!("{}-pod-{}", self.build_id, self.next_id()));
                let inner = ctx.with_env([("POD_LABEL".to_string(), label)]);
                self.run_body(&inner, &args.body()).await
            }
            "parallel" => self.parallel(ctx, args).await,
            "script" => self.run_body(ctx, &args.body()).await,
            "properties" => {
                if let Some(list) = args.get("properties", 0) {
                    for p in self.iterate(list, span)? {
                        if let Value::Map(m) = &p {
                            let m = lock(m).clone();
                            if m.get("$step").map(Value::display).as_deref() == Some("parameters")
                                && let Some(Value::List(ps)) =
                                    m.get("parameterDefinitions").or_else(|| m.get("$0"))
                            {
                                let ps = lock(ps).clone();
                                for def in ps {
                                    self.declare_param(&def);
                                }
                            }
                        }
                    }
                }
                Ok(Value::Null)
            }
            "input" => {
                let msg = args.str("message", 0).unwrap_or_else(|| "input".into());
                self.log(ctx, format!("Input requested: {msg}")).await;
                Err(abort(format!(
                    "`input` waits for a person, and `valet run` is not interactive (message: {msg})"
                )))
            }
            "load" => self.load(ctx, &args).await,
            "readJSON" => {
                let text = self.text_or_file(ctx, &args, "readJSON").await?;
                let j: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| fail(format!("readJSON: invalid JSON: {e}")))?;
                Ok(Value::from_json(&j))
            }
            "writeJSON" => {
                let file = args
                    .str("file", 0)
                    .ok_or_else(|| fail("writeJSON: `file` is required"))?;
                let json = args
                    .get("json", 1)
                    .cloned()
                    .unwrap_or(Value::Null)
                    .to_json();
                let text = if args.named.contains_key("pretty") {
                    serde_json::to_string_pretty(&json).unwrap_or_default()
                } else {
                    json.to_string()
                };
                let pod = self.require_pod(ctx, "writeJSON")?;
                let path = self.file_path(ctx, &pod, &file);
                self.helper(
                    ctx,
                    &pod,
                    "mkdir -p -- \"$(dirname -- \"$1\")\" && cat > \"$1\"",
                    &[path],
                    Some(text.into_bytes()),
                )
                .await?;
                Ok(Value::Null)
            }
            "readProperties" => {
                let text = self.text_or_file(ctx, &args, "readProperties").await?;
                let mut m = IndexMap::new();
                for line in text.lines() {
                    let l = line.trim();
                    if l.is_empty() || l.starts_with('#') || l.starts_with('!') {
                        continue;
                    }
                    if let Some((k, v)) = l.split_once(['=', ':']) {
                        m.insert(k.trim().to_string(), Value::str(v.trim()));
                    }
                }
                Ok(Value::map(m))
            }
            "tool" => {
                let t = args.str("name", 0).unwrap_or_default();
                self.notice(
                    NoticeLevel::Warning,
                    format!(
                        "tool '{t}': valet does not install tools; the one on the PATH is used"
                    ),
                )
                .await;
                Ok(Value::Str(String::new()))
            }
            "readYaml" | "writeYaml" | "getContext" | "splitTests" | "libraryResource" => Err(err(
                "valet.UnsupportedException",
                format!("`{name}` is not supported by `valet run` yet"),
            )),
            "build" => Err(err(
                "valet.UnsupportedException",
                format!(
                    "`build` triggers another Jenkins job ({}); `valet run` runs one pipeline file",
                    args.str("job", 0).unwrap_or_default()
                ),
            )),
            "sshagent" => {
                self.notice(NoticeLevel::Warning, "sshagent: valet does not start an ssh agent; the body runs with the ssh setup of this machine").await;
                self.run_body(ctx, &args.body()).await
            }
            "timestamps" => {
                let inner = Ctx {
                    timestamps: true,
                    ..ctx.clone()
                };
                self.run_body(&inner, &args.body()).await
            }
            n if PASS_THROUGH.contains(&n) => self.run_body(ctx, &args.body()).await,
            n if NOTIFY.contains(&n) => {
                self.notice(
                    NoticeLevel::Info,
                    format!("`{n}` is not carried out by `valet run`"),
                )
                .await;
                match args.body() {
                    Some(_) => self.run_body(ctx, &args.body()).await,
                    None => Ok(Value::Null),
                }
            }
            n if VALUE_STEPS.contains(&n) => {
                let mut m = IndexMap::new();
                m.insert("$step".to_string(), Value::str(n));
                for (i, p) in args.pos.iter().enumerate() {
                    m.insert(format!("${i}"), p.clone());
                }
                for (k, v) in &args.named {
                    m.insert(k.clone(), v.clone());
                }
                if n == "credentials" {
                    return self.credentials_value(&args);
                }
                Ok(Value::map(m))
            }
            other => Err(err(
                "java.lang.NoSuchMethodError",
                format!("No such DSL method '{other}' found among steps"),
            )),
        }
    }

    // ------------------------------------------------------------------ pods

    pub(crate) fn require_pod(&self, _ctx: &Ctx, step: &str) -> R<Arc<PodCtx>> {
        _ctx.pod.clone().ok_or_else(|| {
            err(
                "org.jenkinsci.plugins.workflow.steps.MissingContextVariableException",
                format!("Required context class hudson.FilePath is missing: `{step}` needs a workspace. Perhaps you forgot to surround the code with a step that provides this, such as: node"),
            )
        })
    }

    fn runner(&self, ctx: &Ctx, pod: &PodCtx) -> R<Arc<dyn StepRunner>> {
        let name = ctx
            .container
            .clone()
            .unwrap_or_else(|| pod.spec.default_container.clone());
        match pod.pod.runner(&name) {
            Ok(r) => Ok(r),
            Err(_) if pod.fallback || pod_spec_unresolved(&pod.spec) => {
                let known = fallback_container(&pod.spec);
                pod.pod.runner(&known).map_err(backend_err)
            }
            Err(e) => Err(backend_err(e)),
        }
    }

    /// The current directory as a path in the pod.
    pub(crate) fn cwd_path(&self, ctx: &Ctx, pod: &PodCtx) -> std::path::PathBuf {
        match &ctx.cwd {
            Some(c) => pod.workspace.join(c),
            None => pod.workspace.clone(),
        }
    }

    fn file_path(&self, ctx: &Ctx, pod: &PodCtx, file: &str) -> String {
        self.cwd_path(ctx, pod).join(file).display().to_string()
    }

    /// Allocates a pod for a `node` or a declarative agent.
    pub(crate) async fn provision(
        &self,
        ctx: &Ctx,
        job: Option<&Job>,
        label: Option<String>,
    ) -> R<(Ctx, Instant)> {
        let (planned, job_id, fallback) = match job {
            Some(j) => (j.pod.clone(), j.id.clone(), false),
            None => (default_spec(), format!("job-{}", self.next_id()), true),
        };
        let mut spec = self.resolve_pod(ctx, &planned).await?;
        if spec.containers.is_empty() {
            spec.containers = self.resolve_pod(ctx, &default_spec()).await?.containers;
        }
        if spec.default_container.is_empty() {
            spec.default_container = spec.containers[0].name.clone();
        }
        let label = label.or_else(|| job.and_then(|j| j.label.clone()));
        let started = Instant::now();
        let traced = tracing::info_span!("job", job = %job_id, build = %self.build_id, backend = self.backend.name());
        let (pod, last_phase) = tracing::Instrument::instrument(
            self.provision_pod(&job_id, label.clone(), spec.clone()),
            traced,
        )
        .await?;
        let workspace = pod.workspace();
        self.emit(Event::JobStarted {
            job: job_id.clone(),
            pod: pod.id().to_string(),
            label: label.clone(),
            containers: spec.containers.iter().map(|c| c.name.clone()).collect(),
            workspace: workspace.display().to_string(),
            place: ctx.place(),
        })
        .await;
        let pctx = Arc::new(PodCtx {
            pod: pod.clone(),
            job: job_id,
            spec,
            workspace: workspace.clone(),
            fallback,
            timeline: std::sync::Mutex::new(Some((started, last_phase))),
        });
        let mut inner = ctx.clone();
        inner.pod = Some(pctx);
        inner.container = None;
        inner.cwd = None;
        let inner = inner.with_env([
            ("NODE_NAME".to_string(), pod.id().to_string()),
            (
                "NODE_LABELS".to_string(),
                label.unwrap_or_else(|| pod.id().to_string()),
            ),
            ("WORKSPACE".to_string(), workspace.display().to_string()),
            (
                "WORKSPACE_TMP".to_string(),
                format!("{}@tmp", workspace.display()),
            ),
            ("EXECUTOR_NUMBER".to_string(), "0".to_string()),
        ]);
        Ok((inner, started))
    }

    /// Asks the backend for the pod, turning what it reports while the pod starts into
    /// events; phases the backend does not report are taken as reached when it answers.
    /// Returns the pod and when its last phase was reached.
    async fn provision_pod(
        &self,
        job: &str,
        label: Option<String>,
        mut spec: valet_backend::PodSpec,
    ) -> R<(Arc<dyn valet_backend::Pod>, Instant)> {
        // The operator's policy before any backend sees the pod: privilege, user, CPU.
        self.opts
            .container_policy
            .apply(&mut spec)
            .map_err(|e| err("valet.PolicyException", e.to_string()))?;
        for missing in self.backend.unsupported(&spec) {
            self.notice(NoticeLevel::Warning, missing).await;
        }
        let queued = Instant::now();
        let (ptx, mut prx) = tokio::sync::mpsc::unbounded_channel();
        let req = ProvisionRequest {
            demand: spec.demand(),
            spec,
            job: job.to_string(),
            label,
            build: self.identity(),
            events: PodEvents::new(move |e| {
                let _ = ptx.send(e);
            }),
        };
        let mut seen = PhaseClock::new(queued);
        self.pod_phase(job, "", &mut seen, PodPhase::Queued, queued, None)
            .await;
        let answer = {
            let provision = self.backend.provision(&req);
            tokio::pin!(provision);
            loop {
                tokio::select! {
                    r = &mut provision => break r,
                    Some(e) = prx.recv() => self.pod_event(job, &mut seen, e).await,
                }
            }
        };
        drop(req);
        while let Ok(e) = prx.try_recv() {
            self.pod_event(job, &mut seen, e).await;
        }
        let pod: Arc<dyn valet_backend::Pod> = Arc::from(answer.map_err(backend_err)?);
        let now = Instant::now();
        for phase in [
            PodPhase::Placed,
            PodPhase::Created,
            PodPhase::Started,
            PodPhase::AgentConnected,
        ] {
            if seen.last < phase {
                self.pod_phase(job, pod.id(), &mut seen, phase, now, None)
                    .await;
            }
        }
        Ok((pod, seen.at))
    }

    async fn pod_event(&self, job: &str, seen: &mut PhaseClock, e: PodEvent) {
        match e {
            PodEvent::Phase {
                pod,
                phase,
                at,
                detail,
            } => {
                // Phases only move forward; one reported twice or late counts once.
                if phase > seen.last {
                    self.pod_phase(job, &pod, seen, phase, at, detail).await;
                }
            }
            PodEvent::Creating {
                pod,
                container,
                image,
            } => {
                self.emit(Event::PodProgress {
                    job: job.to_string(),
                    pod,
                    message: format!("creating container {container} ({image})"),
                })
                .await
            }
            PodEvent::Pulling { image } => {
                self.emit(Event::PodProgress {
                    job: job.to_string(),
                    pod: String::new(),
                    message: format!("pulling image {image}"),
                })
                .await
            }
            PodEvent::ContainerStarted { pod, container } => {
                self.emit(Event::PodProgress {
                    job: job.to_string(),
                    pod,
                    message: format!("container {container} started"),
                })
                .await
            }
        }
    }

    async fn pod_phase(
        &self,
        job: &str,
        pod: &str,
        seen: &mut PhaseClock,
        phase: PodPhase,
        at: Instant,
        detail: Option<String>,
    ) {
        let at = at.max(seen.at);
        let took_ms = at.duration_since(seen.at).as_millis() as u64;
        seen.last = phase;
        seen.at = at;
        self.emit(Event::PodPhase {
            job: job.to_string(),
            pod: pod.to_string(),
            backend: self.backend.name().to_string(),
            phase,
            at_ms: at.duration_since(seen.queued).as_millis() as u64,
            took_ms,
            detail,
        })
        .await;
    }

    /// The pod's last phase: the first byte of its first step's output (once per pod).
    pub(crate) async fn first_step_byte(&self, pod: &PodCtx) {
        let Some((queued, last)) = lock(&pod.timeline).take() else {
            return;
        };
        let mut seen = PhaseClock {
            queued,
            at: last,
            last: PodPhase::AgentConnected,
        };
        self.pod_phase(
            &pod.job,
            pod.pod.id(),
            &mut seen,
            PodPhase::FirstStepByte,
            Instant::now(),
            None,
        )
        .await;
    }

    /// Who the build is, for the backend.
    pub(crate) fn identity(&self) -> valet_backend::BuildIdentity {
        valet_backend::BuildIdentity {
            id: self.build_id.clone(),
            number: self.opts.build_number,
            repository: self.opts.repository.clone(),
            pipeline: self.opts.job_name_or_default(self.source),
            file: self.source.name.clone(),
        }
    }

    pub(crate) async fn release(&self, inner: &Ctx, started: Instant, r: &R<Value>) {
        let Some(p) = &inner.pod else { return };
        if let Err(e) = p.pod.teardown().await {
            self.notice(
                NoticeLevel::Warning,
                format!("tearing down {} failed: {e}", p.pod.id()),
            )
            .await;
        }
        let result = match r {
            Err(Flow::Throw(e)) if e.kind == ExcKind::Abort => BuildResult::Aborted,
            Err(Flow::Throw(_)) => BuildResult::Failure,
            _ => BuildResult::Success,
        };
        self.emit(Event::JobFinished {
            job: p.job.clone(),
            result,
            duration_ms: started.elapsed().as_millis() as u64,
        })
        .await;
    }

    // ------------------------------------------------------------------ running commands

    /// Reads a command's output to its end, emitting what `show` says; a cancelled `ctx`
    /// ends the process tree and raises an interruption.
    async fn drive(
        &self,
        ctx: &Ctx,
        step: Option<u64>,
        exec: Execution,
        show: Show,
        mut keep: Keep<'_>,
    ) -> R<Ran> {
        use tokio::io::AsyncWriteExt as _;
        let Execution {
            mut output,
            mut handle,
        } = exec;
        let mut out_mask = StreamMasker::default();
        let mut err_mask = StreamMasker::default();
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let mut seen: u64 = 0;
        enum End {
            Done(Result<ExitStatus, BackendError>),
            Cancelled,
            /// Stdout passed `keep.limit`.
            Over,
            /// The spool file could not be written.
            Spool(std::io::Error),
        }
        let end = {
            let wait = handle.wait();
            tokio::pin!(wait);
            let mut status = None;
            let mut closed = false;
            loop {
                if closed && let Some(s) = status.take() {
                    break End::Done(s);
                }
                tokio::select! {
                    _ = ctx.cancel.cancelled() => break End::Cancelled,
                    chunk = output.recv(), if !closed => {
                    if chunk.is_some() && let Some(p) = &ctx.pod {
                        self.first_step_byte(p).await;
                    }
                    match chunk {
                        Some(Output::Stdout(b)) => {
                            if show.stdout {
                                self.output(ctx, step, Stream::Stdout, &mut out_mask, &b, false).await;
                            } else {
                                seen += b.len() as u64;
                                if seen > keep.limit {
                                    break End::Over;
                                }
                                match keep.file.as_deref_mut() {
                                    Some(f) => if let Err(e) = f.write_all(&b).await {
                                        break End::Spool(e);
                                    },
                                    None => stdout.extend_from_slice(&b),
                                }
                            }
                        }
                        Some(Output::Stderr(b)) => {
                            if show.stderr {
                                self.output(ctx, step, Stream::Stderr, &mut err_mask, &b, false).await;
                            } else {
                                let room = STDERR_KEPT.saturating_sub(stderr.len());
                                stderr.extend_from_slice(&b[..b.len().min(room)]);
                            }
                        }
                        None => closed = true,
                    }},
                    s = &mut wait, if status.is_none() => status = Some(s),
                }
            }
        };
        let status = match end {
            End::Done(s) => s.map_err(backend_err)?,
            End::Over | End::Spool(_) => {
                // Stopped here: whatever comes after is not wanted.
                let _ = handle.cancel(self.opts.kill_grace).await;
                drop(output);
                self.output(ctx, step, Stream::Stderr, &mut err_mask, b"", true)
                    .await;
                return Err(fail(match end {
                    End::Spool(e) => format!("cannot write the build's spool file: {e}"),
                    _ => format!(
                        "{}: {seen} bytes were read before the step was stopped",
                        keep.over
                    ),
                }));
            }
            End::Cancelled => {
                if show.stderr {
                    self.log(ctx, "Sending interrupt signal to process").await;
                }
                let st = handle.cancel(self.opts.kill_grace).await;
                while let Ok(chunk) = output.try_recv() {
                    match chunk {
                        Output::Stdout(b) if show.stdout => {
                            self.output(ctx, step, Stream::Stdout, &mut out_mask, &b, false)
                                .await
                        }
                        Output::Stderr(b) if show.stderr => {
                            self.output(ctx, step, Stream::Stderr, &mut err_mask, &b, false)
                                .await
                        }
                        _ => {}
                    }
                }
                self.output(ctx, step, Stream::Stdout, &mut out_mask, b"", true)
                    .await;
                self.output(ctx, step, Stream::Stderr, &mut err_mask, b"", true)
                    .await;
                let code = st.map(exit_code).unwrap_or(143);
                return Err(abort(format!(
                    "script returned exit code {code} after it was interrupted"
                )));
            }
        };
        self.output(ctx, step, Stream::Stdout, &mut out_mask, b"", true)
            .await;
        self.output(ctx, step, Stream::Stderr, &mut err_mask, b"", true)
            .await;
        if let Some(f) = keep.file.as_deref_mut() {
            f.flush()
                .await
                .map_err(|e| fail(format!("cannot write the build's spool file: {e}")))?;
        }
        let reason = if status.success() {
            None
        } else {
            handle.explain().await
        };
        Ok(Ran {
            status,
            stdout,
            stderr,
            reason,
        })
    }

    async fn sh(&self, ctx: &Ctx, id: Option<u64>, args: &Args) -> R<Value> {
        let script = args
            .str("script", 0)
            .ok_or_else(|| fail("sh: `script` is required"))?;
        let return_stdout = args.flag("returnStdout");
        let return_status = args.flag("returnStatus");
        let pod = self.require_pod(ctx, "sh")?;
        let exec = self.start_step(ctx, &pod, shell_argv(&script)).await?;
        let limit = self.opts.limits.read;
        let ran = self
            .drive(
                ctx,
                id,
                exec,
                Show {
                    stdout: !return_stdout,
                    stderr: true,
                },
                Keep::memory(
                    limit,
                    format!(
                        "sh: the output of returnStdout is over the limit of {}",
                        limit_text(limit)
                    ),
                ),
            )
            .await?;
        let code = exit_code(ran.status);
        if return_status {
            return Ok(if return_stdout {
                Value::Str(String::from_utf8_lossy(&ran.stdout).trim().to_string())
            } else {
                Value::Int(code)
            });
        }
        if code != 0 {
            return Err(fail(match ran.reason {
                Some(reason) => format!("{reason} (script returned exit code {code})"),
                None => format!("script returned exit code {code}"),
            }));
        }
        if return_stdout {
            // Trimmed, as valet documents: `sh(returnStdout: true)` gives the text
            // without surrounding whitespace, so `.trim()` in existing pipelines is harmless.
            return Ok(Value::Str(
                String::from_utf8_lossy(&ran.stdout).trim().to_string(),
            ));
        }
        Ok(Value::Null)
    }

    /// Runs a small `sh -c` helper in the pod, quietly; returns what it did. Its stdout
    /// is kept in memory, up to the read limit.
    async fn run_helper(
        &self,
        ctx: &Ctx,
        pod: &PodCtx,
        script: &str,
        args: &[String],
        stdin: Option<Vec<u8>>,
    ) -> R<Ran> {
        let limit = self.opts.limits.read;
        let keep = Keep::memory(
            limit,
            format!(
                "the output of a file step's command (`{script}`) is over the limit of {}",
                limit_text(limit)
            ),
        );
        self.run_helper_kept(ctx, pod, script, args, stdin, keep)
            .await
    }

    /// [`Self::run_helper`] with its stdout going where `keep` says.
    async fn run_helper_kept(
        &self,
        ctx: &Ctx,
        pod: &PodCtx,
        script: &str,
        args: &[String],
        stdin: Option<Vec<u8>>,
        keep: Keep<'_>,
    ) -> R<Ran> {
        let runner = self.runner(ctx, pod)?;
        let mut argv = vec![
            "/bin/sh".to_string(),
            "-c".to_string(),
            script.to_string(),
            "sh".to_string(),
        ];
        argv.extend(args.iter().cloned());
        let mut cmd = Command::new(argv);
        cmd.env = self.step_env(ctx);
        cmd.cwd = ctx.cwd.as_ref().map(Into::into);
        if cmd.cwd.is_some() && !self.cwd_path(ctx, pod).exists() && pod.workspace.exists() {
            // A `dir` that nothing created yet (seen from a host-visible workspace).
            cmd.cwd = None;
        }
        cmd.stdin = stdin;
        // The agent's cap (stdout and stderr together) is for logs; a helper's stdout is
        // bounded by `keep`, so the cap leaves room for it and for some stderr.
        cmd.output_cap = Some(keep.limit.saturating_add(1024 * 1024));
        let exec = runner.start(cmd).await.map_err(backend_err)?;
        self.drive(
            ctx,
            None,
            exec,
            Show {
                stdout: false,
                stderr: false,
            },
            keep,
        )
        .await
    }

    /// Like [`Self::run_helper`], failing on a non-zero exit with the helper's stderr.
    async fn helper(
        &self,
        ctx: &Ctx,
        pod: &PodCtx,
        script: &str,
        args: &[String],
        stdin: Option<Vec<u8>>,
    ) -> R<Vec<u8>> {
        let r = self.run_helper(ctx, pod, script, args, stdin).await?;
        if !r.status.success() {
            return Err(fail(String::from_utf8_lossy(&r.stderr).trim().to_string()));
        }
        Ok(r.stdout)
    }

    /// Starts `argv` in the current container with the step's environment and directory.
    async fn start_step<I, S>(
        &self,
        ctx: &Ctx,
        pod: &PodCtx,
        argv: I,
    ) -> R<valet_backend::Execution>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let runner = self.runner(ctx, pod)?;
        let mut cmd = Command::new(argv);
        cmd.env = self.step_env(ctx);
        cmd.cwd = ctx.cwd.as_ref().map(Into::into);
        runner.start(cmd).await.map_err(backend_err)
    }

    /// The `text` argument of a reading step, or the content of its `file` in the workspace.
    async fn text_or_file(&self, ctx: &Ctx, args: &Args, step: &str) -> R<String> {
        if let Some(t) = args.str("text", usize::MAX) {
            return Ok(t);
        }
        let file = args
            .str("file", 0)
            .ok_or_else(|| fail(format!("{step}: `file` or `text` is required")))?;
        let pod = self.require_pod(ctx, step)?;
        Ok(
            String::from_utf8_lossy(&self.read_pod_file(ctx, &pod, &file, step).await?)
                .into_owned(),
        )
    }

    /// The content of `file` in the pod, for `step`; at most the read limit.
    async fn read_pod_file(&self, ctx: &Ctx, pod: &PodCtx, file: &str, step: &str) -> R<Vec<u8>> {
        let path = self.file_path(ctx, pod, file);
        let limit = self.opts.limits.read;
        let keep = Keep::memory(
            limit,
            format!("{step}: {file} is over the limit of {}", limit_text(limit)),
        );
        let r = self
            .run_helper_kept(
                ctx,
                pod,
                "cat -- \"$1\"",
                std::slice::from_ref(&path),
                None,
                keep,
            )
            .await?;
        if !r.status.success() {
            return Err(err("java.nio.file.NoSuchFileException", path));
        }
        Ok(r.stdout)
    }

    async fn sleep(&self, ctx: &Ctx, d: Duration) -> R<()> {
        tokio::select! {
            _ = tokio::time::sleep(d) => Ok(()),
            _ = ctx.cancel.cancelled() => Err(abort("sleep was interrupted")),
        }
    }

    // ------------------------------------------------------------------ wrappers

    async fn timeout(&self, ctx: &Ctx, args: &Args) -> R<Value> {
        let n = args
            .get("time", 0)
            .and_then(Value::as_f64)
            .ok_or_else(|| fail("timeout: `time` is required"))?;
        let unit = args
            .str("unit", usize::MAX)
            .unwrap_or_else(|| "MINUTES".into());
        let d = time_unit(&unit, n)?;
        let token = ctx.cancel.child_token();
        let inner = Ctx {
            cancel: token.clone(),
            ..ctx.clone()
        };
        let body = args.body();
        let fut = self.run_body(&inner, &body);
        tokio::pin!(fut);
        tokio::select! {
            r = &mut fut => r,
            _ = tokio::time::sleep(d) => {
                self.log(ctx, format!("Timeout has been exceeded ({n} {})", unit.to_ascii_lowercase())).await;
                token.cancel();
                let r = fut.await;
                match r {
                    Err(Flow::Throw(e)) if e.kind == ExcKind::Abort && !ctx.cancel.is_cancelled() => {
                        Err(abort(format!("Timeout has been exceeded: the body ran longer than {n} {}", unit.to_ascii_lowercase())))
                    }
                    other => other,
                }
            }
        }
    }

    async fn retry(&self, ctx: &Ctx, args: &Args) -> R<Value> {
        let count = args.int("count", 0).unwrap_or(1).max(1);
        let body = args.body();
        let mut attempt = 1;
        loop {
            match self.run_body(ctx, &body).await {
                Err(Flow::Throw(e)) if attempt < count && !ctx.cancel.is_cancelled() => {
                    self.log(ctx, format!("ERROR: {}", e.message)).await;
                    self.log(
                        ctx,
                        format!("Retrying (attempt {} of {count})", attempt + 1),
                    )
                    .await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn wait_until(&self, ctx: &Ctx, args: &Args) -> R<Value> {
        let body = args.body();
        let mut delay = Duration::from_millis(
            args.int("initialRecurrencePeriod", usize::MAX)
                .unwrap_or(250)
                .max(1) as u64,
        );
        loop {
            if self.run_body(ctx, &body).await?.truthy() {
                return Ok(Value::Null);
            }
            if !args.flag("quiet") {
                self.log(
                    ctx,
                    format!("Will try again after {:.2} sec", delay.as_secs_f64()),
                )
                .await;
            }
            self.sleep(ctx, delay).await?;
            delay = (delay.mul_f64(1.2)).min(Duration::from_secs(15));
        }
    }

    async fn catch_error(&self, ctx: &Ctx, name: &str, args: &Args) -> R<Value> {
        let (default_build, default_stage) = if name == "warnError" {
            (BuildResult::Unstable, BuildResult::Unstable)
        } else {
            (BuildResult::Failure, BuildResult::Failure)
        };
        let build = args
            .str("buildResult", usize::MAX)
            .map(|s| BuildResult::parse(&s))
            .unwrap_or(Some(default_build));
        let stage = args
            .str("stageResult", usize::MAX)
            .map(|s| BuildResult::parse(&s))
            .unwrap_or(Some(default_stage));
        let message = args.str("message", if name == "warnError" { 0 } else { usize::MAX });
        let interruptions = args
            .named
            .get("catchInterruptions")
            .map(Value::truthy)
            .unwrap_or(true);
        match self.run_body(ctx, &args.body()).await {
            Err(Flow::Throw(e))
                if (interruptions || e.kind != ExcKind::Abort)
                    && !(ctx.cancel.is_cancelled() && e.kind == ExcKind::Abort) =>
            {
                if let Some(m) = message {
                    self.log(ctx, m).await;
                }
                self.log(ctx, format!("ERROR: {}", e.message)).await;
                let result = if e.kind == ExcKind::Abort {
                    Some(BuildResult::Aborted)
                } else {
                    None
                };
                if let Some(b) = result.or(build) {
                    self.set_build_result(b);
                }
                if let Some(s) = result.or(stage) {
                    self.set_stage_result(ctx, s);
                }
                Ok(Value::Null)
            }
            other => other,
        }
    }

    // ------------------------------------------------------------------ parallel

    async fn parallel(&self, ctx: &Ctx, args: Args) -> R<Value> {
        let mut branches: Vec<(String, Arc<ClosureValue>)> = Vec::new();
        let mut fail_fast = false;
        let mut add = |k: &str, v: &Value| -> R<()> {
            match v {
                Value::Closure(c) => branches.push((k.to_string(), c.clone())),
                other if k == "failFast" => fail_fast = other.truthy(),
                other => {
                    return Err(fail(format!(
                        "parallel: branch `{k}` is not a closure but {}",
                        other.display()
                    )));
                }
            }
            Ok(())
        };
        for p in &args.pos {
            if let Value::Map(m) = p {
                let entries: Vec<(String, Value)> = lock(m)
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                for (k, v) in entries {
                    add(&k, &v)?;
                }
            }
        }
        for (k, v) in &args.named {
            add(k, v)?;
        }
        let bodies: Vec<(String, Option<Arc<ClosureValue>>)> =
            branches.into_iter().map(|(k, c)| (k, Some(c))).collect();
        self.run_branches(ctx, bodies, fail_fast, |it, bctx, body| {
            Box::pin(async move { it.run_body(&bctx, &body).await })
        })
        .await
    }

    /// Runs branches concurrently; with `fail_fast`, the first failure interrupts the others.
    /// Raises the first failure once every branch has ended.
    pub(crate) async fn run_branches<T: Send + Sync>(
        &self,
        ctx: &Ctx,
        branches: Vec<(String, T)>,
        fail_fast: bool,
        run: impl for<'s> Fn(&'s Interp<'a>, Ctx, T) -> BoxFuture<'s, R<Value>> + Send + Sync,
    ) -> R<Value> {
        let tokens: Vec<tokio_util::sync::CancellationToken> =
            branches.iter().map(|_| ctx.cancel.child_token()).collect();
        let mut futs = FuturesUnordered::new();
        for (i, (name, body)) in branches.into_iter().enumerate() {
            let bctx = Ctx {
                cancel: tokens[i].clone(),
                scope: ctx.scope.child(),
                ..ctx.clone()
            };
            let run = &run;
            futs.push(Box::pin(async move {
                let bctx = self.start_stage(&bctx, &name, true).await;
                let started = Instant::now();
                let r = run(self, bctx.clone(), body).await;
                let e = match &r {
                    Err(Flow::Throw(e)) => Some(e.clone()),
                    _ => None,
                };
                self.finish_stage(&bctx, true, started, e.as_deref(), false)
                    .await;
                (i, name, r)
            }) as BoxFuture<'_, (usize, String, R<Value>)>);
        }
        let mut first: Option<Flow> = None;
        while let Some((i, name, r)) = futs.next().await {
            if let Err(f) = r {
                let is_failure =
                    matches!(&f, Flow::Throw(e) if e.kind != ExcKind::Abort) || first.is_none();
                if fail_fast
                    && matches!(&f, Flow::Throw(e) if e.kind != ExcKind::Abort)
                    && first.is_none()
                {
                    self.log(ctx, format!("Failed in branch {name}")).await;
                    for (j, t) in tokens.iter().enumerate() {
                        if j != i {
                            t.cancel();
                        }
                    }
                }
                if first.is_none()
                    || (is_failure
                        && matches!(&first, Some(Flow::Throw(e)) if e.kind == ExcKind::Abort))
                {
                    first = Some(f);
                }
            }
        }
        match first {
            Some(f) => Err(f),
            None => Ok(Value::Null),
        }
    }

    // ------------------------------------------------------------------ files

    /// Files under the current directory matching Ant-style `includes` and not `excludes`.
    async fn list_files(
        &self,
        ctx: &Ctx,
        pod: &PodCtx,
        step: &str,
        includes: &str,
        excludes: &str,
        default_excludes: bool,
    ) -> R<Vec<String>> {
        let limit = self.opts.limits.read;
        let keep = Keep::memory(
            limit,
            format!(
                "{step}: the list of files in the directory is over the limit of {}",
                limit_text(limit)
            ),
        );
        let r = self
            .run_helper_kept(
                ctx,
                pod,
                "find . \\( -type f -o -type l \\) -print",
                &[],
                None,
                keep,
            )
            .await?;
        if !r.status.success() {
            return Err(fail(String::from_utf8_lossy(&r.stderr).trim().to_string()));
        }
        let inc = crate::glob::AntSet::new(includes)?;
        let mut exc_pat = excludes.to_string();
        if default_excludes {
            exc_pat.push_str(",**/.git/**,**/.svn/**,**/.hg/**,**/*~,**/#*#,**/.DS_Store");
        }
        let exc = crate::glob::AntSet::new(&exc_pat)?;
        let mut files: Vec<String> = String::from_utf8_lossy(&r.stdout)
            .lines()
            .map(|l| l.trim_start_matches("./").to_string())
            .filter(|f| !f.is_empty() && inc.matches(f) && !exc.matches(f))
            .collect();
        files.sort();
        Ok(files)
    }

    /// A new file in the build's spool directory (made on first use, private to valet's user).
    fn spool_file(&self) -> R<(std::path::PathBuf, std::fs::File)> {
        let mut spool = lock(&self.spool);
        if spool.is_none() {
            let dir = tempfile::Builder::new()
                .prefix("valet-spool-")
                .tempdir()
                .map_err(|e| fail(format!("cannot make the build's spool directory: {e}")))?;
            *spool = Some(dir);
        }
        let dir = spool
            .as_ref()
            .map(|d| d.path().to_path_buf())
            .unwrap_or_default();
        let path = dir.join(format!("{}.tar", self.next_id()));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| fail(format!("cannot make {}: {e}", path.display())))?;
        Ok((path, file))
    }

    /// `files` as tar streams written by the pod's `tar` (one per group of names, given as
    /// arguments: busybox tar has no `-T`), each spooled to a file; `limit` bounds them all
    /// together, and `over` is the error past it. The files are removed on failure.
    #[tracing::instrument(level = "debug", skip_all, fields(files = files.len(), limit))]
    async fn spool_tar(
        &self,
        ctx: &Ctx,
        pod: &PodCtx,
        files: &[String],
        limit: u64,
        over: String,
    ) -> R<Stash> {
        let mut stash = Stash {
            parts: Vec::new(),
            bytes: 0,
        };
        for names in crate::archive::name_chunks(files) {
            let (path, file) = self.spool_file()?;
            stash.parts.push(path);
            let mut file = tokio::fs::File::from_std(file);
            let keep = Keep {
                file: Some(&mut file),
                limit: limit.saturating_sub(stash.bytes),
                over: over.clone(),
            };
            let r = self
                .run_helper_kept(ctx, pod, "exec tar -cf - \"$@\"", &names, None, keep)
                .await?;
            if !r.status.success() {
                return Err(fail(format!(
                    "tar failed in the pod ({}): {}",
                    r.status,
                    String::from_utf8_lossy(&r.stderr).trim()
                )));
            }
            let len = file
                .metadata()
                .await
                .map_err(|e| fail(format!("cannot read the build's spool file: {e}")))?
                .len();
            stash.bytes += len;
        }
        Ok(stash)
    }

    /// Logs what an unpacking on the host left out, a line each up to a few.
    async fn warn_skipped(&self, ctx: &Ctx, step: &str, skipped: &[(String, &'static str)]) {
        for (path, what) in skipped.iter().take(SKIPPED_SHOWN) {
            self.log(
                ctx,
                format!("WARNING: {step}: {path} is left out: {what} (only regular files and directories are kept)"),
            )
            .await;
        }
        if skipped.len() > SKIPPED_SHOWN {
            self.log(
                ctx,
                format!(
                    "WARNING: {step}: {} more entries are left out",
                    skipped.len() - SKIPPED_SHOWN
                ),
            )
            .await;
        }
    }

    async fn stash(&self, ctx: &Ctx, args: &Args) -> R<Value> {
        let name = args
            .str("name", 0)
            .ok_or_else(|| fail("stash: `name` is required"))?;
        let pod = self.require_pod(ctx, "stash")?;
        let includes = args
            .str("includes", usize::MAX)
            .unwrap_or_else(|| "**".into());
        let excludes = args.str("excludes", usize::MAX).unwrap_or_default();
        let use_defaults = args
            .named
            .get("useDefaultExcludes")
            .map(Value::truthy)
            .unwrap_or(true);
        let files = self
            .list_files(ctx, &pod, "stash", &includes, &excludes, use_defaults)
            .await?;
        if files.is_empty() && !args.flag("allowEmpty") {
            return Err(fail(format!("No files included in stash ‘{name}’")));
        }
        let limits = self.opts.limits;
        // A stash of the same name is replaced, so its size does not count.
        let others: u64 = lock(&self.stashes)
            .iter()
            .filter(|(k, _)| **k != name)
            .map(|(_, s)| s.bytes)
            .sum();
        let left = limits.stashes.saturating_sub(others);
        let (limit, over) = if left < limits.stash {
            (
                left,
                format!(
                    "stash ‘{name}’ is over the limit of {} for all the stashes of a build ({left} bytes were left)",
                    limit_text(limits.stashes)
                ),
            )
        } else {
            (
                limits.stash,
                format!(
                    "stash ‘{name}’ is over the limit of {} for one stash",
                    limit_text(limits.stash)
                ),
            )
        };
        let stash = self.spool_tar(ctx, &pod, &files, limit, over).await?;
        self.log(ctx, format!("Stashed {} file(s) as ‘{name}’", files.len()))
            .await;
        // Dropping the one replaced removes its files (once no unstash reads them).
        let _replaced = lock(&self.stashes).insert(name, Arc::new(stash));
        Ok(Value::Null)
    }

    async fn unstash(&self, ctx: &Ctx, args: &Args) -> R<Value> {
        let name = args
            .str("name", 0)
            .ok_or_else(|| fail("unstash: `name` is required"))?;
        let pod = self.require_pod(ctx, "unstash")?;
        let stash = lock(&self.stashes)
            .get(&name)
            .cloned()
            .ok_or_else(|| fail(format!("No such saved stash ‘{name}’")))?;
        let dir = self.cwd_path(ctx, &pod);
        if pod.pod.host_files() {
            // The pod's files are the host's: unpacked here, never through a link.
            tokio::fs::create_dir_all(&dir)
                .await
                .map_err(|e| fail(format!("unstash: cannot create {}: {e}", dir.display())))?;
            let mut skipped = Vec::new();
            for part in &stash.parts {
                let done = unpack_part(part.clone(), dir.clone())
                    .await
                    .map_err(|e| fail(format!("unstash ‘{name}’: {e}")))?;
                skipped.extend(done.skipped);
            }
            self.warn_skipped(ctx, "unstash", &skipped).await;
            return Ok(Value::Null);
        }
        for part in &stash.parts {
            self.untar_in_pod(ctx, &pod, part, &dir.display().to_string())
                .await?;
        }
        Ok(Value::Null)
    }

    /// Sends the tar stream in `part` to the pod in pieces (so that no more than a piece is
    /// in memory, and each fits in one message to an agent) and unpacks it there with the pod's `tar`, into `dir`.
    #[tracing::instrument(level = "debug", skip_all, fields(part = %part.display(), dir))]
    async fn untar_in_pod(
        &self,
        ctx: &Ctx,
        pod: &PodCtx,
        part: &std::path::Path,
        dir: &str,
    ) -> R<()> {
        // Below what one gRPC message to an agent may carry (4 MiB), with room to spare.
        const PIECE: usize = 2 * 1024 * 1024;
        let mut file = tokio::fs::File::open(part)
            .await
            .map_err(|e| fail(format!("cannot read the build's spool file: {e}")))?;
        let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
        if len <= PIECE as u64 {
            let data = read_piece(&mut file, PIECE).await?;
            self.helper(
                ctx,
                pod,
                "mkdir -p -- \"$1\" && cd \"$1\" && tar -xf -",
                &[dir.to_string()],
                Some(data),
            )
            .await?;
            return Ok(());
        }
        let tmp = format!(
            "{}@tmp/unstash-{}-{}.tar",
            pod.workspace.display(),
            std::process::id(),
            self.next_id()
        );
        let mut first = true;
        let mut r: R<()> = Ok(());
        loop {
            let data = match read_piece(&mut file, PIECE).await {
                Ok(d) => d,
                Err(e) => {
                    r = Err(e);
                    break;
                }
            };
            if data.is_empty() {
                break;
            }
            let script = if first {
                "mkdir -p -- \"$(dirname -- \"$1\")\" && cat > \"$1\""
            } else {
                "cat >> \"$1\""
            };
            first = false;
            if let Err(e) = self
                .helper(ctx, pod, script, std::slice::from_ref(&tmp), Some(data))
                .await
            {
                r = Err(e);
                break;
            }
        }
        if r.is_ok() {
            r = self
                .helper(
                    ctx,
                    pod,
                    "mkdir -p -- \"$1\" && cd \"$1\" && tar -xf \"$2\"",
                    &[dir.to_string(), tmp.clone()],
                    None,
                )
                .await
                .map(drop);
        }
        self.remove_in_pod(ctx, pod, std::slice::from_ref(&tmp))
            .await;
        r
    }

    async fn archive(&self, ctx: &Ctx, args: &Args) -> R<Value> {
        let pattern = args
            .str("artifacts", 0)
            .or_else(|| args.str("includes", usize::MAX))
            .ok_or_else(|| fail("archiveArtifacts: `artifacts` is required"))?;
        let excludes = args.str("excludes", usize::MAX).unwrap_or_default();
        let pod = self.require_pod(ctx, "archiveArtifacts")?;
        let files = self
            .list_files(ctx, &pod, "archiveArtifacts", &pattern, &excludes, true)
            .await?;
        if files.is_empty() {
            if args.flag("allowEmptyArchive") {
                self.log(
                    ctx,
                    format!("No artifacts found that match the file pattern \"{pattern}\""),
                )
                .await;
                return Ok(Value::Null);
            }
            return Err(fail(format!(
                "No artifacts found that match the file pattern \"{pattern}\". Configuration error?"
            )));
        }
        let Some(dir) = &self.opts.artifacts_dir else {
            self.notice(
                NoticeLevel::Info,
                "archiveArtifacts: no artifacts directory was given; artifacts are not kept",
            )
            .await;
            return Ok(Value::Null);
        };
        let limit = self.opts.limits.archive;
        let over = format!(
            "archiveArtifacts: the artifacts are over the limit of {} for one archiveArtifacts",
            limit_text(limit)
        );
        let spooled = self.spool_tar(ctx, &pod, &files, limit, over).await?;
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
        let mut written = 0;
        let mut skipped = Vec::new();
        for part in &spooled.parts {
            let done = unpack_part(part.clone(), dir.clone())
                .await
                .map_err(|e| fail(format!("archiving failed: {e}")))?;
            written += done.files;
            skipped.extend(done.skipped);
        }
        drop(spooled);
        self.warn_skipped(ctx, "archiveArtifacts", &skipped).await;
        self.log(
            ctx,
            format!("Archived {written} artifact(s) into {}", dir.display()),
        )
        .await;
        Ok(Value::Null)
    }

    async fn junit(&self, ctx: &Ctx, args: &Args) -> R<Value> {
        let pattern = args
            .str("testResults", 0)
            .ok_or_else(|| fail("junit: `testResults` is required"))?;
        let pod = self.require_pod(ctx, "junit")?;
        let files = self
            .list_files(ctx, &pod, "junit", &pattern, "", false)
            .await?;
        if files.is_empty() {
            if args.flag("allowEmptyResults") {
                return Ok(Value::Null);
            }
            return Err(fail(
                "No test report files were found. Configuration error?",
            ));
        }
        let (mut tests, mut failures, mut skipped) = (0, 0, 0);
        for f in &files {
            let text = String::from_utf8_lossy(&self.read_pod_file(ctx, &pod, f, "junit").await?)
                .into_owned();
            tests += text.matches("<testcase").count();
            failures += text.matches("<failure").count() + text.matches("<error").count();
            skipped += text.matches("<skipped").count();
        }
        self.log(
            ctx,
            format!(
                "Test results: {tests} tests, {failures} failed, {skipped} skipped ({} file(s))",
                files.len()
            ),
        )
        .await;
        if failures > 0 && !args.flag("skipMarkingBuildUnstable") {
            self.set_stage_result(ctx, BuildResult::Unstable);
            self.set_build_result(BuildResult::Unstable);
        }
        Ok(Value::map(IndexMap::from([
            ("totalCount".to_string(), Value::Int(tests as i64)),
            ("failCount".to_string(), Value::Int(failures as i64)),
            ("skipCount".to_string(), Value::Int(skipped as i64)),
            (
                "passCount".to_string(),
                Value::Int((tests - failures - skipped.min(tests - failures)) as i64),
            ),
        ])))
    }

    // ------------------------------------------------------------------ credentials

    fn credential(&self, id: &str) -> R<crate::secrets::Credential> {
        self.opts.secrets.get(id).ok_or_else(|| {
            fail(format!(
                "Could not find credentials entry with ID '{id}' (give it in the --secrets file or as VALET_SECRET_{})",
                id.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect::<String>()
            ))
        })
    }

    /// `credentials('id')` in a declarative `environment`: the secret text, or `user:password`.
    fn credentials_value(&self, args: &Args) -> R<Value> {
        let id = args.str("id", 0).unwrap_or_default();
        let c = self.credential(&id)?;
        let v = match (c.secret(), c.field("username"), c.field("password")) {
            (_, Some(u), Some(p)) => format!("{u}:{p}"),
            (Some(s), _, _) => s.to_string(),
            _ => return Err(fail(format!("credentials '{id}' has no value"))),
        };
        self.masker.add(&v);
        for f in ["password", "value", "privateKey", "passphrase"] {
            if let Some(x) = c.field(f) {
                self.masker.add(x);
            }
        }
        Ok(Value::Str(v))
    }

    /// Binds credentials for the declarative `environment { X = credentials('id') }`:
    /// `X`, and for a username/password `X_USR` and `X_PSW`.
    pub(crate) fn credentials_env(&self, var: &str, id: &str) -> R<Vec<(String, String)>> {
        let c = self.credential(id)?;
        let mut out = Vec::new();
        if let (Some(u), Some(p)) = (c.field("username"), c.field("password")) {
            self.masker.add(u);
            self.masker.add(p);
            out.push((var.to_string(), format!("{u}:{p}")));
            out.push((format!("{var}_USR"), u.to_string()));
            out.push((format!("{var}_PSW"), p.to_string()));
        } else if let Some(s) = c.secret() {
            self.masker.add(s);
            out.push((var.to_string(), s.to_string()));
        } else {
            return Err(fail(format!("credentials '{id}' has no value")));
        }
        Ok(out)
    }

    async fn write_secret_file(&self, ctx: &Ctx, content: &str) -> R<String> {
        let pod = self.require_pod(ctx, "withCredentials")?;
        let path = format!(
            "{}@tmp/secretFiles/{}-{}",
            pod.workspace.display(),
            std::process::id(),
            self.next_id()
        );
        self.helper(
            ctx,
            &pod,
            "umask 077 && mkdir -p -- \"$(dirname -- \"$1\")\" && cat > \"$1\"",
            std::slice::from_ref(&path),
            Some(content.as_bytes().to_vec()),
        )
        .await?;
        Ok(path)
    }

    async fn with_credentials(&self, ctx: &Ctx, args: &Args) -> R<Value> {
        let bindings = args.get("bindings", 0).cloned().unwrap_or(Value::Null);
        let mut vars: Vec<(String, String)> = Vec::new();
        let mut files: Vec<String> = Vec::new();
        for b in self.iterate(&bindings, Span::default())? {
            let Value::Map(m) = &b else {
                return Err(fail(format!(
                    "withCredentials: `{}` is not a binding",
                    b.display()
                )));
            };
            let m = lock(m).clone();
            let get = |k: &str| {
                m.get(k)
                    .filter(|v| !matches!(v, Value::Null))
                    .map(Value::display)
            };
            let kind = get("$step").unwrap_or_default();
            let id = get("credentialsId")
                .ok_or_else(|| fail(format!("withCredentials: `{kind}` needs a credentialsId")))?;
            let c = self.credential(&id)?;
            let field = |f: &str| -> R<String> {
                c.field(f)
                    .map(str::to_string)
                    .ok_or_else(|| fail(format!("credentials '{id}' has no `{f}`")))
            };
            match kind.as_str() {
                "string" => {
                    let v = c
                        .secret()
                        .map(str::to_string)
                        .ok_or_else(|| fail(format!("credentials '{id}' is not a secret text")))?;
                    self.masker.add(&v);
                    vars.push((get("variable").unwrap_or_default(), v));
                }
                "usernamePassword" => {
                    let (u, p) = (field("username")?, field("password")?);
                    self.masker.add(&u);
                    self.masker.add(&p);
                    if let Some(var) = get("usernameVariable") {
                        vars.push((var, u));
                    }
                    if let Some(var) = get("passwordVariable") {
                        vars.push((var, p));
                    }
                }
                "usernameColonPassword" => {
                    let v = format!("{}:{}", field("username")?, field("password")?);
                    self.masker.add(&v);
                    self.masker.add(&field("password")?);
                    vars.push((get("variable").unwrap_or_default(), v));
                }
                "file" => {
                    let content = match (c.secret(), c.field("path")) {
                        (Some(s), _) => s.to_string(),
                        (None, Some(p)) => std::fs::read_to_string(p).map_err(|e| {
                            fail(format!("credentials '{id}': cannot read {p}: {e}"))
                        })?,
                        _ => return Err(fail(format!("credentials '{id}' is not a file"))),
                    };
                    self.masker.add(&content);
                    let path = self.write_secret_file(ctx, &content).await?;
                    files.push(path.clone());
                    vars.push((get("variable").unwrap_or_default(), path));
                }
                "sshUserPrivateKey" => {
                    let key = field("privateKey")?;
                    self.masker.add(&key);
                    for line in key
                        .lines()
                        .filter(|l| l.len() > 8 && !l.starts_with("-----"))
                    {
                        self.masker.add(line);
                    }
                    let path = self.write_secret_file(ctx, &key).await?;
                    files.push(path.clone());
                    if let Some(var) = get("keyFileVariable") {
                        vars.push((var, path));
                    }
                    if let (Some(var), Some(u)) = (get("usernameVariable"), c.field("username")) {
                        vars.push((var, u.to_string()));
                    }
                    if let (Some(var), Some(p)) = (get("passphraseVariable"), c.field("passphrase"))
                    {
                        self.masker.add(p);
                        vars.push((var, p.to_string()));
                    }
                }
                other => {
                    return Err(fail(format!(
                        "withCredentials: the `{other}` binding is not supported (use string, usernamePassword, usernameColonPassword, file or sshUserPrivateKey)"
                    )));
                }
            }
        }
        let inner = ctx.with_env(vars);
        let r = self.run_body(&inner, &args.body()).await;
        if !files.is_empty()
            && let Some(pod) = &ctx.pod
        {
            self.remove_in_pod(ctx, pod, &files).await;
        }
        r
    }

    /// Removes `paths` in the pod, even when the build is being cancelled (a secret file or
    /// a spooled archive must not stay behind); a failure is only logged by the helper.
    async fn remove_in_pod(&self, ctx: &Ctx, pod: &PodCtx, paths: &[String]) {
        let uncancelled = Ctx {
            cancel: Default::default(),
            ..ctx.clone()
        };
        let _ = self
            .run_helper(&uncancelled, pod, "rm -f -- \"$@\"", paths, None)
            .await;
    }

    // ------------------------------------------------------------------ source

    async fn checkout(&self, ctx: &Ctx, id: Option<u64>, args: &Args) -> R<Value> {
        let what = args.get("scm", 0).cloned().unwrap_or(Value::Null);
        match &what {
            Value::Object(Obj::Scm) => self.checkout_scm(ctx).await,
            Value::Map(m) => {
                let m = lock(m).clone();
                let url = m.get("userRemoteConfigs").and_then(|u| match u {
                    Value::List(l) => lock(l).first().and_then(|c| match c {
                        Value::Map(c) => lock(c).get("url").map(Value::display),
                        _ => None,
                    }),
                    _ => None,
                });
                let branch = m.get("branches").and_then(|b| match b {
                    Value::List(l) => lock(l).first().and_then(|c| match c {
                        Value::Map(c) => lock(c).get("name").map(Value::display),
                        _ => None,
                    }),
                    _ => None,
                });
                match url {
                    Some(url) => {
                        let branch = branch.unwrap_or_else(|| "master".into());
                        let branch = branch
                            .trim_start_matches("*/")
                            .trim_start_matches("refs/heads/")
                            .to_string();
                        self.git_clone(ctx, id, &url, &branch).await
                    }
                    None => Err(fail(
                        "checkout: only Git checkouts with `userRemoteConfigs: [[url: …]]` are supported",
                    )),
                }
            }
            other => Err(fail(format!(
                "checkout: cannot check out {}",
                other.display()
            ))),
        }
    }

    /// `checkout scm`: the files of the git checkout the pipeline file is in (tracked and
    /// untracked, not ignored, and `.git`), copied into the current directory.
    pub(crate) async fn checkout_scm(&self, ctx: &Ctx) -> R<Value> {
        let pod = self.require_pod(ctx, "checkout")?;
        let Some(scm) = &self.opts.scm else {
            self.notice(NoticeLevel::Warning, "checkout scm: the pipeline file is not in a git checkout, so there is nothing to check out").await;
            return Ok(Value::map(IndexMap::new()));
        };
        let list = tokio::process::Command::new("git")
            .arg("-C")
            .arg(&scm.dir)
            .args(["ls-files", "-z", "-c", "-o", "--exclude-standard"])
            .output()
            .await
            .map_err(|e| fail(format!("checkout scm: cannot run git: {e}")))?;
        if !list.status.success() {
            return Err(fail(format!(
                "checkout scm: git ls-files failed: {}",
                String::from_utf8_lossy(&list.stderr).trim()
            )));
        }
        let mut names: Vec<u8> = Vec::new();
        for f in list.stdout.split(|b| *b == 0).filter(|f| !f.is_empty()) {
            let p = scm.dir.join(String::from_utf8_lossy(f).as_ref());
            if p.exists() {
                names.extend_from_slice(f);
                names.push(0);
            }
        }
        if scm.dir.join(".git").exists() {
            names.extend_from_slice(b".git\0");
        }
        // The stream goes to a spool file, not memory, and into the pod in pieces: a
        // repository can be far larger than one message to an agent.
        let (spooled, spool) = self.spool_file()?;
        let mut child = tokio::process::Command::new("tar")
            .arg("-C")
            .arg(&scm.dir)
            .args(["--null", "-cf", "-", "-T", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::from(spool))
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| fail(format!("checkout scm: cannot run tar: {e}")))?;
        let mut stdin = child.stdin.take();
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt as _;
            if let Some(s) = stdin.as_mut() {
                let _ = s.write_all(&names).await;
            }
        });
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| fail(format!("checkout scm: tar failed: {e}")));
        let _ = writer.await;
        let r = match out {
            Ok(out) if !out.status.success() => Err(fail(format!(
                "checkout scm: tar failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))),
            Ok(_) => {
                let dir = self.cwd_path(ctx, &pod).display().to_string();
                self.untar_in_pod(ctx, &pod, &spooled, &dir).await
            }
            Err(e) => Err(e),
        };
        let _ = std::fs::remove_file(&spooled);
        r?;
        self.log(
            ctx,
            format!(
                "Checked out {} ({})",
                scm.dir.display(),
                scm.commit.as_deref().unwrap_or("no commit")
            ),
        )
        .await;
        let mut m = IndexMap::new();
        if let Some(c) = &scm.commit {
            m.insert("GIT_COMMIT".to_string(), Value::Str(c.clone()));
        }
        if let Some(b) = &scm.branch {
            m.insert("GIT_BRANCH".to_string(), Value::Str(b.clone()));
        }
        Ok(Value::map(m))
    }

    async fn git_clone(&self, ctx: &Ctx, id: Option<u64>, url: &str, branch: &str) -> R<Value> {
        let pod = self.require_pod(ctx, "git")?;
        let script = "if [ -d .git ]; then git fetch --quiet \"$1\" \"$2\" && git checkout --quiet -f FETCH_HEAD; else git clone --quiet --branch \"$2\" \"$1\" .; fi && git rev-parse HEAD";
        let exec = self
            .start_step(ctx, &pod, ["/bin/sh", "-c", script, "sh", url, branch])
            .await?;
        let ran = self
            .drive(
                ctx,
                id,
                exec,
                Show {
                    stdout: false,
                    stderr: true,
                },
                Keep::memory(
                    self.opts.limits.read,
                    format!(
                        "git: the output is over the limit of {}",
                        limit_text(self.opts.limits.read)
                    ),
                ),
            )
            .await?;
        if !ran.status.success() {
            return Err(fail(format!(
                "git: cloning {url} (branch {branch}) failed with {}",
                ran.status
            )));
        }
        let commit = String::from_utf8_lossy(&ran.stdout)
            .trim()
            .lines()
            .last()
            .unwrap_or("")
            .to_string();
        lock(&self.global_env).insert("GIT_COMMIT".into(), commit.clone());
        lock(&self.global_env).insert("GIT_URL".into(), url.to_string());
        Ok(Value::map(IndexMap::from([
            ("GIT_COMMIT".to_string(), Value::Str(commit)),
            (
                "GIT_BRANCH".to_string(),
                Value::Str(format!("origin/{branch}")),
            ),
            ("GIT_URL".to_string(), Value::Str(url.to_string())),
        ])))
    }

    async fn load(&self, ctx: &Ctx, args: &Args) -> R<Value> {
        let path = args
            .str("path", 0)
            .ok_or_else(|| fail("load: a path is required"))?;
        let pod = self.require_pod(ctx, "load")?;
        let text = String::from_utf8_lossy(&self.read_pod_file(ctx, &pod, &path, "load").await?)
            .into_owned();
        let parsed = valet_dsl::parse(&text);
        let has_errors = parsed.has_errors();
        let Some(script) = parsed.script.filter(|_| !has_errors) else {
            let src = valet_dsl::SourceFile::new(path.clone(), text);
            let msg = valet_dsl::render_all(&parsed.diagnostics, &src);
            return Err(fail(format!(
                "load: {path} is not a valid pipeline script:\n{msg}"
            )));
        };
        let script = Arc::new(script);
        lock(&self.loaded).push(script.clone());
        let mut functions = std::collections::HashMap::new();
        for s in &script.stmts {
            if let valet_dsl::ast::StmtKind::Function(f) = &s.kind {
                functions.insert(f.name.name.clone(), Arc::new(f.clone()));
            }
        }
        let module = Arc::new(crate::interp::Loaded {
            functions,
            scope: self.root.child(),
        });
        let inner = Ctx {
            scope: module.scope.clone(),
            module: Some(module.clone()),
            ..ctx.clone()
        };
        let v = match self.exec_stmts(&inner, &script.stmts).await {
            Ok(v) | Err(Flow::Return(v)) => v,
            Err(e) => return Err(e),
        };
        Ok(match v {
            Value::Null => Value::Object(Obj::Script(module)),
            other => other,
        })
    }

    pub(crate) fn declare_param(&self, def: &Value) {
        let Value::Map(m) = def else { return };
        let m = lock(m).clone();
        let kind = m.get("$step").map(Value::display).unwrap_or_default();
        let Some(name) = m.get("name").map(Value::display) else {
            return;
        };
        let default = match kind.as_str() {
            "booleanParam" => Value::Bool(m.get("defaultValue").is_some_and(Value::truthy)),
            "choice" => match m.get("choices") {
                Some(Value::List(l)) => lock(l).first().cloned().unwrap_or(Value::Null),
                Some(Value::Str(s)) => Value::str(s.lines().next().unwrap_or("")),
                _ => Value::Null,
            },
            _ => m.get("defaultValue").cloned().unwrap_or(Value::str("")),
        };
        self.define_param(&name, &kind, default);
    }

    /// A build parameter: its value from `-p NAME=VALUE` when given, else its default.
    pub(crate) fn define_param(&self, name: &str, kind: &str, default: Value) {
        lock(&self.declared_params).insert(name.to_string(), kind.to_string());
        let v = match self.opts.params.get(name) {
            Some(given) => match kind {
                "booleanParam" => Value::Bool(given.trim().eq_ignore_ascii_case("true")),
                _ => Value::Str(given.clone()),
            },
            None => default,
        };
        if let Value::Map(m) = &self.params {
            lock(m).insert(name.to_string(), v);
        }
    }
}

/// Whether the pod's containers may include some the plan could not see (a `yamlFile`).
/// The phases a pod has reached so far.
struct PhaseClock {
    queued: Instant,
    at: Instant,
    last: PodPhase,
}

impl PhaseClock {
    fn new(queued: Instant) -> PhaseClock {
        PhaseClock {
            queued,
            at: queued,
            last: PodPhase::Queued,
        }
    }
}

fn pod_spec_unresolved(spec: &valet_backend::PodSpec) -> bool {
    spec.extra.contains_key("yamlFile") || spec.yaml.iter().any(|y| y.starts_with("yamlFile:"))
}

/// A container that is certainly in the spec, for a name the plan could not resolve.
fn fallback_container(spec: &valet_backend::PodSpec) -> String {
    if spec
        .containers
        .iter()
        .any(|c| c.name == spec.default_container)
    {
        return spec.default_container.clone();
    }
    spec.containers
        .iter()
        .find(|c| !c.jnlp)
        .or(spec.containers.first())
        .map(|c| c.name.clone())
        .unwrap_or_else(|| "default".into())
}

fn join_cwd(cwd: Option<&str>, path: &str) -> String {
    if path.starts_with('/') {
        return path.to_string();
    }
    match cwd {
        Some(c) if !c.is_empty() => format!("{}/{}", c.trim_end_matches('/'), path),
        _ => path.to_string(),
    }
}
