//! Steps through the in-pod valet agent.
//!
//! Every container of a pod runs the static `valet-agent` binary as its first process,
//! bind-mounted read-only at [`AGENT_IN_CONTAINER`]. How the host reaches it depends on the
//! backend's [`crate::AgentChannel`]:
//!
//! * `Socket`: the agent serves on `<container>.sock` in the pod's host directory (see
//!   [`crate::gc::pod_dir_root`]), which is mounted at [`RUN_DIR`];
//! * `DialOut`: the agent dials the pod's tunnel listener on its network's gateway
//!   (`--dial`), with a one-time token for its pod and container in its environment (see
//!   [`crate::network`] and [`valet_agent::tunnel`]).
//!
//! The container's own command (the spec's, or else the image's `ENTRYPOINT` + `CMD`) is
//! handed to the agent, which runs it as a child beside the steps. The pod is ready when every
//! agent answers; steps are [`valet_agent::AgentRunner`] calls over those channels.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bollard::Docker;
use bollard::models::ContainerCreateBody;
use tracing::Instrument as _;
use valet_agent::{AgentExecution, AgentRunner, PendingAgent, Token};
use valet_backend::{BackendError, Command, Execution, ExecutionHandle, ExitStatus, StepRunner};

use crate::{DockerBackend, WORKSPACE, context, map_err, oom, status};

/// How a container's agent is told to reach the host.
pub(crate) enum Reach<'a> {
    /// Serve on `socket` (a file name) in the pod's host directory `dir`.
    Socket { dir: &'a Path, socket: String },
    /// Dial the pod's tunnel at `addr` with `token`.
    Dial {
        addr: SocketAddr,
        pod: &'a str,
        token: Token,
    },
}

/// How the host waits for a container's agent.
pub(crate) enum Waiting {
    /// Connecting to this socket.
    Socket(PathBuf),
    /// Until the agent dials in.
    Dial(PendingAgent),
}

/// Where the agent binary is mounted in every container.
pub const AGENT_IN_CONTAINER: &str = "/valet/bin/valet-agent";
/// Where the pod's host directory (the agents' sockets) is mounted in every container.
pub const RUN_DIR: &str = "/valet/run";
/// How long a pod's agents get to answer after their containers started.
pub const READY_WITHIN: Duration = Duration::from_secs(15);
/// How long past the grace a cancel waits for the agent to end a step before the container
/// is killed from outside: an agent in a container its step floods (every pid taken, the CPU
/// share spent) may never answer.
pub const AGENT_CANCEL_SLACK: Duration = Duration::from_secs(4);
/// How long `docker kill`, and then the step's end, may take after it.
const OUTSIDE_KILL_WITHIN: Duration = Duration::from_secs(6);
/// Unix socket paths are limited to 108 bytes; past this a socket is named by index.
const SOCKET_PATH_MAX: usize = 100;

/// The image's `ENTRYPOINT` and `CMD`, per image reference.
pub(crate) type ImageCommands = Arc<Mutex<HashMap<String, (Vec<String>, Vec<String>)>>>;

/// The socket file name of container `name` (the `index`th of its pod) in `dir`.
pub(crate) fn socket_name(dir: &Path, index: usize, name: &str) -> String {
    let by_name = format!("{}.sock", crate::sanitize(name));
    if dir.join(&by_name).as_os_str().len() <= SOCKET_PATH_MAX {
        by_name
    } else {
        format!("c{index}.sock")
    }
}

/// Opens the pod's host directory to every user: the agent of a container that runs as
/// `runAsUser` creates its socket there (containers see it through the bind mount only). Its
/// parent, [`crate::gc::pod_dir_root`], is closed to other users of the host instead: a
/// socket there runs commands in the pod.
pub(crate) fn open_run_dir(dir: &Path) -> Result<(), BackendError> {
    use std::os::unix::fs::PermissionsExt as _;
    let set = |d: &Path, mode| {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode))
            .map_err(|e| BackendError::Internal(format!("permissions of {}: {e}", d.display())))
    };
    if let Some(root) = dir.parent() {
        set(root, 0o700)?;
    }
    set(dir, 0o777)
}

impl DockerBackend {
    /// The agent binary to mount: the one given with [`DockerBackend::with_agent`], else
    /// [`valet_agent::binary::locate`].
    pub(crate) fn agent_binary(&self) -> Result<PathBuf, BackendError> {
        match &self.agent {
            Some(p) => Ok(p.clone()),
            None => {
                valet_agent::binary::locate().map_err(|e| BackendError::Unavailable(e.to_string()))
            }
        }
    }

    /// `ENTRYPOINT` and `CMD` of `image` (inspected once per image, pulled if missing).
    async fn image_commands(
        &self,
        image: &str,
    ) -> Result<(Vec<String>, Vec<String>), BackendError> {
        if let Some(c) = self
            .image_commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(image)
        {
            return Ok(c.clone());
        }
        let info = match self.docker.inspect_image(image).await {
            Err(e) if status(&e) == Some(404) => {
                self.pull(image).await?;
                self.docker.inspect_image(image).await.map_err(map_err)?
            }
            r => r.map_err(map_err)?,
        };
        let config = info.config.unwrap_or_default();
        let c = (
            config.entrypoint.unwrap_or_default(),
            config.cmd.unwrap_or_default(),
        );
        self.image_commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(image.to_string(), c.clone());
        Ok(c)
    }

    /// Makes `body` (a container as the spec describes it) run the agent first: the agent
    /// and the pod's directory are mounted, and the container's own command becomes the
    /// agent's child. Docker's rules for what that command is: an entrypoint given without
    /// a cmd drops the image's cmd; a cmd given alone follows the image's entrypoint.
    pub(crate) async fn run_agent_in(
        &self,
        mut body: ContainerCreateBody,
        agent: &Path,
        reach: Reach<'_>,
        container: &str,
    ) -> Result<ContainerCreateBody, BackendError> {
        let image = body.image.clone().unwrap_or_default();
        let own = match (body.entrypoint.take(), body.cmd.take()) {
            (Some(e), Some(c)) => [e, c].concat(),
            (Some(e), None) => e,
            (None, cmd) => {
                let (entrypoint, image_cmd) = self.image_commands(&image).await.map_err(|e| {
                    context(e, &format!("container '{container}' could not be created"))
                })?;
                [entrypoint, cmd.unwrap_or(image_cmd)].concat()
            }
        };
        let mut cmd = vec!["serve".to_string()];
        let mut run_dir = None;
        match reach {
            Reach::Socket { dir, socket } => {
                cmd.extend(["--socket".to_string(), format!("{RUN_DIR}/{socket}")]);
                run_dir = Some(dir);
            }
            Reach::Dial { addr, pod, token } => {
                cmd.extend([
                    "--dial".to_string(),
                    addr.to_string(),
                    "--pod".to_string(),
                    pod.to_string(),
                    "--container".to_string(),
                    container.to_string(),
                ]);
                // The environment, not the command line: `ps` on the host shows the latter.
                // Steps inherit it, but by the time one runs the token is spent.
                body.env.get_or_insert_with(Vec::new).push(format!(
                    "{}={}",
                    valet_agent::dial::TOKEN_ENV,
                    token.expose()
                ));
            }
        }
        if !own.is_empty() {
            cmd.push("--".into());
            cmd.extend(own);
        }
        body.entrypoint = Some(vec![AGENT_IN_CONTAINER.to_string()]);
        body.cmd = Some(cmd);
        let host = body.host_config.get_or_insert_with(Default::default);
        let binds = host.binds.get_or_insert_with(Vec::new);
        binds.push(format!("{}:{AGENT_IN_CONTAINER}:ro", agent.display()));
        if let Some(dir) = run_dir {
            binds.push(format!("{}:{RUN_DIR}", dir.display()));
        }
        Ok(body)
    }
}

/// Waits for the agent of every container to answer; `containers` maps the spec's name to
/// (container id, how to wait for its agent, memory limit).
pub(crate) async fn connect_all(
    docker: &Docker,
    containers: Vec<(String, String, Waiting, Option<u64>)>,
) -> Result<HashMap<String, Arc<dyn StepRunner>>, BackendError> {
    let connects = containers
        .into_iter()
        .map(|(name, id, waiting, memory_limit)| async move {
            let workspace = Path::new(WORKSPACE);
            let answer = async {
                match waiting {
                    Waiting::Socket(path) => {
                        AgentRunner::wait_for(&path, workspace, READY_WITHIN).await
                    }
                    Waiting::Dial(pending) => pending.connect(workspace, READY_WITHIN).await,
                }
            };
            let answered = tokio::select! {
                r = answer => r.map_err(|e| e.to_string()),
                // A container that ended will never answer: say so without waiting out the limit.
                _ = ended(docker, &id) => Err("the container stopped".to_string()),
            };
            match answered {
                Ok(agent) => {
                    let runner: Arc<dyn StepRunner> = Arc::new(DockerRunner {
                        agent: agent.with_name(name.clone()),
                        docker: docker.clone(),
                        container: id,
                        name: name.clone(),
                        memory_limit,
                        killed: Arc::default(),
                    });
                    Ok((name, runner))
                }
                Err(e) => {
                    // Say why when the engine knows: the container may have exited.
                    let state = docker
                        .inspect_container(&id, None)
                        .await
                        .ok()
                        .and_then(|i| i.state)
                        .map(|s| {
                            format!(
                                "; the container is {} (exit code {})",
                                s.status.map(|s| s.to_string()).unwrap_or_default(),
                                s.exit_code.unwrap_or_default()
                            )
                        })
                        .unwrap_or_default();
                    Err(BackendError::Unavailable(format!(
                        "container '{name}': the valet agent did not answer: {e}{state}"
                    )))
                }
            }
        });
    futures::future::join_all(connects)
        .await
        .into_iter()
        .collect()
}

/// Resolves once container `id` is not running (polled: only a pod slow to start pays).
async fn ended(docker: &Docker, id: &str) {
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let running = docker
            .inspect_container(id, None)
            .await
            .ok()
            .and_then(|i| i.state)
            .and_then(|s| s.running);
        if running == Some(false) {
            return;
        }
    }
}

/// Runs commands in one container through its agent.
pub(crate) struct DockerRunner {
    agent: AgentRunner,
    docker: Docker,
    container: String,
    /// The spec's name of the container and its memory limit, for OOM reports.
    name: String,
    memory_limit: Option<u64>,
    /// Why the container was killed from outside, once it was: it runs no more steps.
    killed: Killed,
}

/// Set once a container was killed from outside, with the reason; shared by the container's
/// runner and its steps.
type Killed = Arc<Mutex<Option<String>>>;

#[async_trait::async_trait]
impl StepRunner for DockerRunner {
    async fn start(&self, cmd: Command) -> Result<Execution, BackendError> {
        if let Some(why) = self
            .killed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Err(BackendError::Lost(why));
        }
        let began = SystemTime::now();
        let span = tracing::debug_span!("step", container = %self.name, argv = ?cmd.argv);
        let (output, inner) =
            tracing::Instrument::instrument(self.agent.start_agent(cmd), span).await?;
        Ok(Execution {
            output,
            handle: Box::new(DockerExecution {
                inner,
                docker: self.docker.clone(),
                container: self.container.clone(),
                name: self.name.clone(),
                memory_limit: self.memory_limit,
                began,
                status: None,
                killed: self.killed.clone(),
            }),
        })
    }
}

struct DockerExecution {
    inner: AgentExecution,
    docker: Docker,
    container: String,
    name: String,
    memory_limit: Option<u64>,
    began: SystemTime,
    status: Option<ExitStatus>,
    killed: Killed,
}

impl DockerExecution {
    /// Kills the whole container (its agent, the step and all it started): the way out
    /// when the agent does not end a step. `why` is what later steps are told.
    #[tracing::instrument(name = "kill container", skip_all, fields(container = %self.name))]
    async fn kill_container(&mut self, why: String) -> Result<ExitStatus, BackendError> {
        tracing::warn!(container = %self.name, "{why}");
        *self.killed.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!(
            "container '{}' was killed from outside and runs no more steps: {why}",
            self.name
        ));
        let kill = self.docker.kill_container(
            &self.container,
            Some(bollard::query_parameters::KillContainerOptions {
                signal: "KILL".into(),
            }),
        );
        match tokio::time::timeout(OUTSIDE_KILL_WITHIN, kill).await {
            Ok(Ok(())) => {}
            // Already stopped (409: not running; 404: gone): nothing of the step runs.
            Ok(Err(e)) if matches!(status(&e), Some(404 | 409)) => {}
            Ok(Err(e)) => return Err(map_err(e)),
            Err(_) => {
                return Err(BackendError::Lost(format!(
                    "container '{}': the engine did not kill it within {} s",
                    self.name,
                    OUTSIDE_KILL_WITHIN.as_secs()
                )));
            }
        }
        // The agent went with its container: its stream ends now, if it has not already.
        let _ = tokio::time::timeout(Duration::from_secs(1), self.inner.wait()).await;
        self.status = Some(ExitStatus::Signal(9));
        Ok(ExitStatus::Signal(9))
    }
}

#[async_trait::async_trait]
impl ExecutionHandle for DockerExecution {
    async fn wait(&mut self) -> Result<ExitStatus, BackendError> {
        let st = self.inner.wait().await?;
        self.status = Some(st);
        Ok(st)
    }

    async fn cancel(&mut self, grace: Duration) -> Result<ExitStatus, BackendError> {
        let limit = grace.saturating_add(AGENT_CANCEL_SLACK);
        let asked = tokio::time::timeout(limit, self.inner.cancel(grace))
            .instrument(tracing::info_span!("cancel step", container = %self.name))
            .await;
        match asked {
            Ok(Ok(st)) => {
                self.status = Some(st);
                Ok(st)
            }
            Ok(Err(e)) => {
                self.kill_container(format!(
                    "its agent could not be asked to end the step ({e})"
                ))
                .await
            }
            Err(_) => {
                self.kill_container(format!(
                    "its agent did not end the step within {} s of the cancel",
                    limit.as_secs()
                ))
                .await
            }
        }
    }

    async fn explain(&mut self) -> Option<String> {
        if let Some(why) = self
            .killed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Some(why);
        }
        // The OOM killer sends SIGKILL; any other end needs no engine's word.
        if self.status != Some(ExitStatus::Signal(9)) {
            return None;
        }
        oom::oom_reason(
            &self.docker,
            &self.container,
            &self.name,
            self.memory_limit,
            self.began,
        )
        .await
    }
}
