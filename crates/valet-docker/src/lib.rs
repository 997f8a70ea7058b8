//! `valet-docker`: the Docker backend.
//!
//! A pod is a group of containers on the local Docker engine (through [`bollard`]):
//!
//! * a **sandbox** container (`valet/busybox` running `sleep`) that holds the pod's network
//!   namespace, like Kubernetes' pause container;
//! * one container per container of the [`PodSpec`], joined to the sandbox with
//!   `network_mode: container:<sandbox id>` (so they all share `127.0.0.1`), all mounting one
//!   named volume (the workspace) at `/workspace`. A container with `jnlp: true` or without an
//!   image runs `valet/busybox`;
//! * labels `valet.pod=<pod id>` and `valet.build=<build id>` on every container and on the
//!   volume, so teardown (and a later garbage collector) finds them;
//! * limits from the spec: memory limit → `memory` and `memory_swap` (equal: no swap), CPU
//!   limit → `nano_cpus`, CPU request → `cpu_shares`, `run_as_user`/`run_as_group` → `user`,
//!   and `pids_limit` 4096.
//!
//! The base image `valet/busybox:latest` is built offline by `images/build.sh` (from Debian's
//! `busybox-static`); [`DockerBackend::ensure_base_image`] runs it when the image is missing.
//!
//! # Step execution: Docker exec, for now
//!
//! Steps currently run through the Docker **exec** API: each command is wrapped as
//! `/bin/sh -c 'echo $$ >/tmp/valet-step-<n>.pid; exec "$@"' valet-step <argv…>`, so the
//! container needs `/bin/sh`. The exec'd process is a session and process-group leader (runc
//! makes it one), so cancelling runs `kill -TERM -<pid>` in the same container, waits for the
//! group to go for the grace period, then `kill -KILL -<pid>`. Exit codes come from
//! `inspect_exec`; Docker reports a death by signal `n` as code `128 + n`, so codes 129–192
//! are read as signals (an `exit 130` is indistinguishable from SIGINT here).
//!
//! **This is a stopgap.** The in-pod valet agent (DESIGN, step 5) replaces exec in a later
//! session: a static agent binary mounted into every container that runs steps itself (exact
//! exit status and signal, process groups without a `/bin/sh` in the image, OOM reporting).
//!
//! Not yet done: the agent, OOM-kill reporting, garbage collection of pods left by a crashed
//! valet (by label), a warm pool of sandboxes, image pulls (`always_pull`, missing images are
//! an error), spec volumes other than the workspace, ports, and the CLI wiring
//! (`valet run --backend docker`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, ExecConfig, HostConfig, VolumeCreateRequest};
use bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptions, RemoveContainerOptions, RemoveVolumeOptions,
};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use valet_backend::{
    Backend, BackendError, Command, Execution, ExecutionHandle, ExitStatus, Output, Pod, PodSpec,
    StepRunner,
};
use valet_plan::model::{ContainerSpec, Value};

/// The image of sandboxes, `jnlp` containers and containers without an image.
pub const BASE_IMAGE: &str = "valet/busybox:latest";
/// Where the workspace volume is mounted in every container.
pub const WORKSPACE: &str = "/workspace";
/// Label holding the pod id, on every container and volume of a pod.
pub const LABEL_POD: &str = "valet.pod";
/// Label holding the build id.
pub const LABEL_BUILD: &str = "valet.build";
/// Label holding the spec container's name (`sandbox` for the sandbox).
pub const LABEL_CONTAINER: &str = "valet.container";
/// The process limit of every container.
pub const PIDS_LIMIT: i64 = 4096;

/// Runs pods as containers on the local Docker engine.
#[derive(Clone)]
pub struct DockerBackend {
    docker: Docker,
    base_image: String,
}

impl DockerBackend {
    /// Connects to the local engine (`DOCKER_HOST` or the default socket) and negotiates the
    /// API version.
    pub async fn connect() -> Result<Self, BackendError> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(|e| BackendError::Unavailable(format!("docker: {e}")))?
            .negotiate_version()
            .await
            .map_err(|e| BackendError::Unavailable(format!("docker: {e}")))?;
        docker
            .ping()
            .await
            .map_err(|e| BackendError::Unavailable(format!("docker: {e}")))?;
        Ok(DockerBackend {
            docker,
            base_image: BASE_IMAGE.to_string(),
        })
    }

    /// The bollard client (for inspection in tests and tools).
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// Whether the base image is present on the engine.
    pub async fn has_base_image(&self) -> Result<bool, BackendError> {
        match self.docker.inspect_image(&self.base_image).await {
            Ok(_) => Ok(true),
            Err(e) if status(&e) == Some(404) => Ok(false),
            Err(e) => Err(map_err(e)),
        }
    }

    /// Builds the base image with `build_script` (`images/build.sh`) when it is missing.
    pub async fn ensure_base_image(&self, build_script: &Path) -> Result<(), BackendError> {
        if self.has_base_image().await? {
            return Ok(());
        }
        let out = tokio::process::Command::new(build_script)
            .arg(&self.base_image)
            .output()
            .await
            .map_err(|e| BackendError::Internal(format!("{}: {e}", build_script.display())))?;
        if !out.status.success() {
            return Err(BackendError::Internal(format!(
                "{} failed ({}): {}",
                build_script.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(())
    }

    async fn create_and_start(
        &self,
        name: &str,
        body: ContainerCreateBody,
    ) -> Result<String, BackendError> {
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.to_string()),
                    ..Default::default()
                }),
                body,
            )
            .await
            .map_err(map_err)?;
        self.docker
            .start_container(&created.id, None)
            .await
            .map_err(map_err)?;
        Ok(created.id)
    }

    async fn provision_into(
        &self,
        pod: &DockerPod,
        spec: &PodSpec,
        build_id: &str,
    ) -> Result<HashMap<String, String>, BackendError> {
        let labels = |container: &str| {
            HashMap::from([
                (LABEL_POD.to_string(), pod.id.clone()),
                (LABEL_BUILD.to_string(), build_id.to_string()),
                (LABEL_CONTAINER.to_string(), container.to_string()),
            ])
        };
        self.docker
            .create_volume(VolumeCreateRequest {
                name: Some(pod.volume.clone()),
                labels: Some(HashMap::from([
                    (LABEL_POD.to_string(), pod.id.clone()),
                    (LABEL_BUILD.to_string(), build_id.to_string()),
                ])),
                ..Default::default()
            })
            .await
            .map_err(map_err)?;

        let sandbox = self
            .create_and_start(
                &format!("{}-sandbox", pod.id),
                ContainerCreateBody {
                    image: Some(self.base_image.clone()),
                    entrypoint: Some(vec!["sleep".into()]),
                    cmd: Some(vec!["2147483647".into()]),
                    labels: Some(labels("sandbox")),
                    host_config: Some(HostConfig {
                        pids_limit: Some(16),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )
            .await?;

        let mut containers = HashMap::new();
        for c in &spec.containers {
            let body = self.container_body(spec, c, &sandbox, &pod.volume, labels(&c.name));
            let id = self
                .create_and_start(&format!("{}-{}", pod.id, sanitize(&c.name)), body)
                .await?;
            containers.insert(c.name.clone(), id);
        }
        Ok(containers)
    }

    fn container_body(
        &self,
        spec: &PodSpec,
        c: &ContainerSpec,
        sandbox: &str,
        volume: &str,
        labels: HashMap<String, String>,
    ) -> ContainerCreateBody {
        let image = match &c.image {
            Some(image) if !c.jnlp && !image.is_empty() => image.clone(),
            _ => self.base_image.clone(),
        };
        // Kubernetes semantics: `command` replaces the entrypoint, `args` the cmd. A container
        // that says nothing is kept alive with `sleep` so steps can be exec'd into it.
        let command = c.command.as_ref().map(strings).filter(|v| !v.is_empty());
        let args = c.args.as_ref().map(strings).filter(|v| !v.is_empty());
        let (entrypoint, cmd) = match (command, args) {
            (None, None) => (
                Some(vec!["sleep".to_string()]),
                Some(vec!["2147483647".to_string()]),
            ),
            (command, args) => (command, args),
        };
        let env: Vec<String> = spec
            .env
            .iter()
            .chain(c.env.iter())
            .map(|(k, v)| format!("{k}={}", scalar(v)))
            .collect();
        let user = match (
            c.run_as_user.or(spec.run_as_user),
            c.run_as_group.or(spec.run_as_group),
        ) {
            (Some(u), Some(g)) => Some(format!("{u}:{g}")),
            (Some(u), None) => Some(u.to_string()),
            (None, Some(g)) => Some(format!("0:{g}")),
            (None, None) => None,
        };
        let r = &c.resources;
        let memory = r.limit_memory_bytes.map(|b| b as i64);
        ContainerCreateBody {
            image: Some(image),
            entrypoint,
            cmd,
            env: Some(env),
            user,
            working_dir: Some(
                c.working_dir
                    .clone()
                    .unwrap_or_else(|| WORKSPACE.to_string()),
            ),
            labels: Some(labels),
            host_config: Some(HostConfig {
                network_mode: Some(format!("container:{sandbox}")),
                binds: Some(vec![format!("{volume}:{WORKSPACE}")]),
                memory,
                memory_swap: memory,
                nano_cpus: r.limit_cpu_millis.map(|m| m as i64 * 1_000_000),
                cpu_shares: r
                    .request_cpu_millis
                    .map(|m| ((m as i64) * 1024 / 1000).max(2)),
                pids_limit: Some(PIDS_LIMIT),
                privileged: Some(c.privileged),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

#[async_trait::async_trait]
impl Backend for DockerBackend {
    fn name(&self) -> &'static str {
        "docker"
    }

    async fn provision(
        &self,
        spec: &PodSpec,
        build_id: &str,
    ) -> Result<Box<dyn Pod>, BackendError> {
        let id = pod_id(&spec.name);
        let mut pod = DockerPod {
            docker: self.docker.clone(),
            volume: format!("{id}-workspace"),
            id,
            containers: HashMap::new(),
        };
        match self.provision_into(&pod, spec, build_id).await {
            Ok(containers) => {
                pod.containers = containers
                    .into_iter()
                    .map(|(name, id)| {
                        let runner: Arc<dyn StepRunner> = Arc::new(DockerRunner {
                            docker: self.docker.clone(),
                            container: id,
                        });
                        (name, runner)
                    })
                    .collect();
                Ok(Box::new(pod))
            }
            Err(e) => {
                let _ = pod.teardown().await;
                Err(e)
            }
        }
    }
}

/// A pod on Docker.
pub struct DockerPod {
    docker: Docker,
    id: String,
    volume: String,
    containers: HashMap<String, Arc<dyn StepRunner>>,
}

impl DockerPod {
    /// The name of the pod's workspace volume.
    pub fn volume(&self) -> &str {
        &self.volume
    }
}

#[async_trait::async_trait]
impl Pod for DockerPod {
    fn id(&self) -> &str {
        &self.id
    }

    fn workspace(&self) -> PathBuf {
        PathBuf::from(WORKSPACE)
    }

    fn runner(&self, container: &str) -> Result<Arc<dyn StepRunner>, BackendError> {
        self.containers.get(container).cloned().ok_or_else(|| {
            BackendError::Rejected(format!("pod {} has no container {container:?}", self.id))
        })
    }

    async fn teardown(&self) -> Result<(), BackendError> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{LABEL_POD}={}", self.id)],
        )]);
        let found = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(map_err)?;
        // The pod's containers first, the sandbox (whose namespace they join) last.
        let mut ids: Vec<(bool, String)> = found
            .into_iter()
            .filter_map(|c| {
                let sandbox = c
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(LABEL_CONTAINER))
                    .is_some_and(|n| n == "sandbox");
                c.id.map(|id| (sandbox, id))
            })
            .collect();
        ids.sort();
        for (_, id) in ids {
            match self
                .docker
                .remove_container(
                    &id,
                    Some(RemoveContainerOptions {
                        force: true,
                        v: true,
                        ..Default::default()
                    }),
                )
                .await
            {
                Ok(()) => {}
                Err(e) if matches!(status(&e), Some(404) | Some(409)) => {}
                Err(e) => return Err(map_err(e)),
            }
        }
        match self
            .docker
            .remove_volume(&self.volume, Some(RemoveVolumeOptions { force: true }))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if status(&e) == Some(404) => Ok(()),
            Err(e) => Err(map_err(e)),
        }
    }
}

static STEP: AtomicU64 = AtomicU64::new(0);

/// Runs commands in one container with Docker exec.
struct DockerRunner {
    docker: Docker,
    container: String,
}

#[async_trait::async_trait]
impl StepRunner for DockerRunner {
    async fn start(&self, cmd: Command) -> Result<Execution, BackendError> {
        if cmd.argv.is_empty() {
            return Err(BackendError::Rejected("empty command".into()));
        }
        let n = STEP.fetch_add(1, Ordering::Relaxed);
        let pid_file = format!("/tmp/valet-step-{}-{n}.pid", std::process::id());
        let mut argv = vec![
            "/bin/sh".to_string(),
            "-c".to_string(),
            format!("echo $$ >{pid_file}; exec \"$@\""),
            "valet-step".to_string(),
        ];
        argv.extend(cmd.argv.iter().cloned());
        let cwd = match &cmd.cwd {
            Some(p) if p.is_absolute() => p.clone(),
            Some(p) => Path::new(WORKSPACE).join(p),
            None => PathBuf::from(WORKSPACE),
        };
        let env: Vec<String> = cmd.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let exec = self
            .docker
            .create_exec(
                &self.container,
                ExecConfig {
                    attach_stdin: Some(cmd.stdin.is_some()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    tty: Some(false),
                    env: Some(env),
                    cmd: Some(argv),
                    user: cmd.user.clone(),
                    working_dir: Some(cwd.to_string_lossy().into_owned()),
                    ..Default::default()
                },
            )
            .await
            .map_err(map_err)?
            .id;
        let started = self
            .docker
            .start_exec(
                &exec,
                Some(StartExecOptions {
                    detach: false,
                    tty: false,
                    output_capacity: None,
                }),
            )
            .await
            .map_err(map_err)?;
        let StartExecResults::Attached {
            mut output,
            mut input,
        } = started
        else {
            return Err(BackendError::Internal("exec started detached".into()));
        };
        if let Some(data) = cmd.stdin {
            tokio::spawn(async move {
                let _ = input.write_all(&data).await;
                let _ = input.shutdown().await;
            });
        } else {
            drop(input);
        }
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let reader = tokio::spawn(async move {
            let mut tx = Some(tx);
            while let Some(item) = output.next().await {
                let chunk = match item {
                    Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                        Output::Stdout(message)
                    }
                    Ok(LogOutput::StdErr { message }) => Output::Stderr(message),
                    Ok(LogOutput::StdIn { .. }) => continue,
                    Err(_) => break,
                };
                if let Some(sender) = &tx
                    && sender.send(chunk).await.is_err()
                {
                    tx = None;
                }
            }
        });
        Ok(Execution {
            output: rx,
            handle: Box::new(DockerExecution {
                docker: self.docker.clone(),
                container: self.container.clone(),
                exec,
                pid_file,
                reader: Some(reader),
                status: None,
            }),
        })
    }
}

struct DockerExecution {
    docker: Docker,
    container: String,
    exec: String,
    pid_file: String,
    reader: Option<tokio::task::JoinHandle<()>>,
    status: Option<ExitStatus>,
}

impl DockerExecution {
    /// Runs a short helper command in the step's container and returns its exit code.
    async fn helper(&self, script: String) -> Result<i64, BackendError> {
        let exec = self
            .docker
            .create_exec(
                &self.container,
                ExecConfig {
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    cmd: Some(vec!["/bin/sh".into(), "-c".into(), script]),
                    user: Some("0".into()),
                    ..Default::default()
                },
            )
            .await
            .map_err(map_err)?
            .id;
        if let StartExecResults::Attached { mut output, .. } =
            self.docker.start_exec(&exec, None).await.map_err(map_err)?
        {
            while output.next().await.is_some() {}
        }
        exec_exit_code(&self.docker, &exec).await
    }

    /// The process-group id of the step, once its wrapper has written it.
    async fn pid(&self) -> Result<Option<u32>, BackendError> {
        let exec = self
            .docker
            .create_exec(
                &self.container,
                ExecConfig {
                    attach_stdout: Some(true),
                    cmd: Some(vec!["cat".into(), self.pid_file.clone()]),
                    user: Some("0".into()),
                    ..Default::default()
                },
            )
            .await
            .map_err(map_err)?
            .id;
        let mut text = Vec::new();
        if let StartExecResults::Attached { mut output, .. } =
            self.docker.start_exec(&exec, None).await.map_err(map_err)?
        {
            while let Some(Ok(chunk)) = output.next().await {
                if let LogOutput::StdOut { message } = chunk {
                    text.extend_from_slice(&message);
                }
            }
        }
        Ok(String::from_utf8_lossy(&text).trim().parse().ok())
    }
}

#[async_trait::async_trait]
impl ExecutionHandle for DockerExecution {
    async fn wait(&mut self) -> Result<ExitStatus, BackendError> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        if let Some(reader) = &mut self.reader {
            let _ = reader.await;
            self.reader = None;
        }
        let code = exec_exit_code(&self.docker, &self.exec).await?;
        let status = match code {
            129..=192 => ExitStatus::Signal((code - 128) as i32),
            c => ExitStatus::Code(c as i32),
        };
        self.status = Some(status);
        let _ = self.helper(format!("rm -f {}", self.pid_file)).await;
        Ok(status)
    }

    async fn cancel(&mut self, grace: Duration) -> Result<ExitStatus, BackendError> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        if self.reader.as_ref().is_some_and(|r| !r.is_finished()) {
            // The wrapper writes its pid first thing; give it a moment if it has not yet.
            let mut pid = None;
            for _ in 0..20 {
                pid = self.pid().await?;
                if pid.is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            if let Some(pid) = pid {
                let deadline = tokio::time::Instant::now() + grace;
                self.helper(format!("kill -TERM -{pid} 2>/dev/null; true"))
                    .await?;
                loop {
                    // Gone when no process of the group is left.
                    if self.helper(format!("kill -0 -{pid} 2>/dev/null")).await? != 0 {
                        break;
                    }
                    if tokio::time::Instant::now() >= deadline {
                        self.helper(format!("kill -KILL -{pid} 2>/dev/null; true"))
                            .await?;
                        break;
                    }
                    tokio::time::sleep(
                        Duration::from_millis(50).min(deadline - tokio::time::Instant::now()),
                    )
                    .await;
                }
            }
        }
        self.wait().await
    }
}

/// The exit code of a finished exec (waiting briefly for Docker to record it).
async fn exec_exit_code(docker: &Docker, exec: &str) -> Result<i64, BackendError> {
    for _ in 0..200 {
        let info = docker.inspect_exec(exec).await.map_err(map_err)?;
        if info.running != Some(true)
            && let Some(code) = info.exit_code
        {
            return Ok(code);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(BackendError::Lost(format!(
        "exec {exec} did not report an exit code"
    )))
}

fn status(e: &bollard::errors::Error) -> Option<u16> {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn map_err(e: bollard::errors::Error) -> BackendError {
    match status(&e) {
        Some(404) => BackendError::NotFound(e.to_string()),
        Some(400) | Some(409) => BackendError::Rejected(e.to_string()),
        Some(_) => BackendError::Internal(e.to_string()),
        None => BackendError::Unavailable(e.to_string()),
    }
}

/// A unique pod id from the spec's name: `valet-<name>-<pid><time><counter>`.
fn pod_id(name: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let mut name = sanitize(name);
    name.truncate(40);
    format!(
        "valet-{name}-{:x}",
        (nanos ^ ((std::process::id() as u64) << 40)).wrapping_add(n)
    )
}

/// Keeps `[a-zA-Z0-9_.-]` of a name (Docker's container and volume name alphabet).
fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    if s.is_empty() { "pod".into() } else { s }
}

/// A command or argument list as strings.
fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::List(items) => items.iter().map(scalar).collect(),
        Value::Null => Vec::new(),
        // A single string is one shell word list, as Jenkins' pod templates write it.
        Value::Str(s) => s.split_whitespace().map(str::to_string).collect(),
        other => vec![scalar(other)],
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Str(s) => s.clone(),
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        other => other.display(),
    }
}
