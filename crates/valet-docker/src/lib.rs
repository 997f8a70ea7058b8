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
//! * labels `valet.pod=<pod id>` and `valet.build=<build id>` on every container, on the
//!   volume and (dial-out mode) on the pod's network, so teardown (and a later garbage
//!   collector) finds them;
//! * limits from the spec: memory limit → `memory` and `memory_swap` (equal: no swap), CPU
//!   limit → `nano_cpus`, CPU request → `cpu_shares`, `run_as_user`/`run_as_group` → `user`,
//!   the process limit (the operator's `default_pids_limit`) → `pids_limit`.
//!
//! # When a container does not give its step back
//!
//! A cancel (a `timeout`, an API cancel) asks the container's agent to end the step (TERM,
//! grace, KILL). A container flooded by its step (a fork bomb at its process limit, its CPU
//! share taken) may not answer in time: then the container is killed from outside
//! (`docker kill`), its step ends with signal 9, and the container runs no more steps (they
//! fail saying why). Teardown removes the containers first, waits until the engine has
//! them gone, then removes the volume, retrying while the engine still counts it in use.
//!
//! The base image `valet/busybox:latest` is built offline by `images/build.sh` (from Debian's
//! `busybox-static`); [`DockerBackend::ensure_base_image`] runs it when the image is missing.
//!
//! # Step execution: the valet agent
//!
//! Steps do not use Docker exec. Every container runs the static `valet-agent` binary as its
//! first process (bind-mounted read-only at `/valet/bin/valet-agent`), which serves the step
//! protocol on `/valet/run/<container>.sock`: the pod's host directory (under
//! [`gc::pod_dir_root`], named by pod id, opened to every user so an agent running as
//! `runAsUser` can bind there). The container's own command (the spec's `command`/`args`, else
//! the image's `ENTRYPOINT` + `CMD`, inspected once per image) runs as the agent's child, so
//! sidecars keep working; the agent reaps zombies and forwards TERM. A pod is ready when
//! every agent answers. See [`agent`] and the `valet-agent` crate.
//!
//! # Dial-out: the agents reach the host
//!
//! With [`AgentChannel::DialOut`] no socket is shared: each pod gets a bridge network of its
//! own ([`network`]), the pod's tunnel listener ([`valet_agent::DialListener`]) binds on that
//! network's gateway address, and each agent dials it (`--dial`) with a one-time token
//! scoped to its pod and container. It is how pods on Kubernetes or on other hosts reach the
//! controller, exercised here on the local engine.
//!
//! Not yet done: spec volumes other than the workspace, and ports.

pub mod agent;
pub mod gc;
pub mod network;
pub mod oom;
mod pool;
pub mod retry;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, ContainerCreateResponse, HostConfig, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions,
};
use futures::StreamExt;
use tracing::Instrument as _;
use valet_agent::DialListener;
use valet_backend::{
    Backend, BackendError, ContainerSpec, Pod, PodEvent, PodEvents, PodPhase, PodSpec,
    ProvisionRequest, StepRunner,
};

pub use gc::LABEL_OWNER;
use retry::{Backoff, retry, transient};

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
/// Label holding the warm pool's id, on the pods it made.
pub const LABEL_POOL: &str = "valet.pool";
/// The process limit of a container whose spec has none (the policy's default).
pub const PIDS_LIMIT: i64 = valet_backend::policy::DEFAULT_PIDS_LIMIT as i64;

/// Set on every container that is not privileged: setuid binaries give no privilege.
const NO_NEW_PRIVILEGES: &str = "no-new-privileges";

/// How the host reaches the agents of a pod.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AgentChannel {
    /// Each agent serves on a unix socket in the pod's host directory, mounted into the pod.
    #[default]
    Socket,
    /// Each agent dials the pod's tunnel listener on the pod's own network (see [`network`]).
    DialOut,
}

/// Runs pods as containers on the local Docker engine.
#[derive(Clone)]
pub struct DockerBackend {
    channel: AgentChannel,
    docker: Docker,
    base_image: String,
    /// Written on everything this backend creates, for [`gc`].
    owner: String,
    pool: Option<Arc<pool::Pool>>,
    /// The agent binary to mount; `None`: found by [`valet_agent::binary::locate`].
    agent: Option<PathBuf>,
    image_commands: agent::ImageCommands,
}

tokio::task_local! {
    /// Where the pod being provisioned reports its progress: set around a request's
    /// provisioning; pods the warm pool makes in the background report nothing.
    static EVENTS: PodEvents;
}

impl DockerBackend {
    /// [`DockerBackend::connect`], then checks that the base image is built: what every
    /// user of the backend needs before a pod can start.
    pub async fn connect_ready() -> Result<Self, BackendError> {
        let d = Self::connect().await?;
        if !d.has_base_image().await? {
            return Err(BackendError::Unavailable(
                "the base image valet/busybox is not built: run `just images` (images/build.sh)"
                    .into(),
            ));
        }
        Ok(d)
    }

    /// Connects to the local engine (`DOCKER_HOST` or the default socket) and negotiates the
    /// API version.
    pub async fn connect() -> Result<Self, BackendError> {
        let unavailable =
            |e: bollard::errors::Error| BackendError::Unavailable(format!("docker: {e}"));
        let docker = Docker::connect_with_local_defaults().map_err(unavailable)?;
        let docker = retry(&Backoff::ENGINE, "negotiate version", transient, || {
            docker.clone().negotiate_version()
        })
        .await
        .map_err(unavailable)?;
        retry(&Backoff::ENGINE, "ping", transient, || docker.ping())
            .await
            .map_err(unavailable)?;
        Ok(DockerBackend {
            channel: AgentChannel::Socket,
            docker,
            base_image: BASE_IMAGE.to_string(),
            owner: gc::current_owner().to_string(),
            pool: None,
            agent: None,
            image_commands: Default::default(),
        })
    }

    /// Mounts this `valet-agent` binary (static) into the containers instead of the one
    /// [`valet_agent::binary::locate`] finds.
    pub fn with_agent(mut self, path: PathBuf) -> Self {
        self.agent = Some(path);
        self
    }

    /// Reaches the agents over `channel` (default: [`AgentChannel::Socket`]).
    pub fn with_channel(mut self, channel: AgentChannel) -> Self {
        self.channel = channel;
        self
    }

    /// How the host reaches the agents.
    pub fn channel(&self) -> AgentChannel {
        self.channel
    }

    /// Keeps `size` ready pods per pod template (0: no pool). A template is warmed when it is
    /// first provisioned (or by [`DockerBackend::warm`]); a pod handed out is never given
    /// back: its teardown destroys it and the pool makes a new one in the background.
    pub fn with_warm_pool(mut self, size: usize) -> Self {
        self.pool = (size > 0).then(|| Arc::new(pool::Pool::new(size, size)));
        self
    }

    /// Keeps `n` started sandboxes (with their volume and host directory) ready for pods of
    /// any template, and no ready pods: a pod then needs only its own containers made. (The
    /// warm pool of [`DockerBackend::with_warm_pool`] keeps them too.)
    pub fn with_ready_sandboxes(mut self, n: usize) -> Self {
        self.pool = (n > 0).then(|| Arc::new(pool::Pool::new(0, n)));
        self
    }

    /// How many started sandboxes are ready for new pods.
    pub fn ready_sandboxes(&self) -> usize {
        self.pool
            .as_ref()
            .map_or(0, |p| p.ready(&pool::sandbox_spec()))
    }

    /// The bollard client (for inspection in tests and tools).
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// Starts filling the warm pool for `spec` (no-op without a pool).
    pub fn warm(&self, spec: &PodSpec) {
        if let Some(pool) = &self.pool {
            pool.refill(self, &pool::sandbox_spec());
            pool.refill(self, spec);
        }
    }

    /// How many pods are ready in the warm pool for `spec`.
    pub fn warm_ready(&self, spec: &PodSpec) -> usize {
        self.pool.as_ref().map_or(0, |p| p.ready(spec))
    }

    /// The pool's label value (`valet.pool`), on every pod it made.
    pub fn warm_pool_id(&self) -> Option<&str> {
        self.pool.as_ref().map(|p| p.id())
    }

    /// Removes what valet left behind (see [`gc`]).
    pub async fn gc(&self, scope: &gc::Scope) -> Result<gc::Removed, BackendError> {
        gc::collect(&self.docker, scope).await
    }

    /// Reports `e` to the request being provisioned, if any.
    fn report(&self, e: PodEvent) {
        let _ = EVENTS.try_with(|events| events.emit(e));
    }

    fn phase(&self, pod: &str, phase: PodPhase, detail: Option<&str>) {
        let _ = EVENTS.try_with(|events| events.phase_at(pod, phase, detail.map(str::to_string)));
    }

    /// Whether the base image is present on the engine.
    pub async fn has_base_image(&self) -> Result<bool, BackendError> {
        match retry(&Backoff::ENGINE, "inspect image", transient, || {
            self.docker.inspect_image(&self.base_image)
        })
        .await
        {
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

    /// Creates a container; a missing image is pulled once, then the creation is tried again.
    async fn create(
        &self,
        name: &str,
        container: &str,
        body: ContainerCreateBody,
    ) -> Result<String, BackendError> {
        let image = body.image.clone().unwrap_or_default();
        let span = tracing::debug_span!("create container", container, image = %image);
        match self.create_once(name, &body).instrument(span).await {
            Err(e) if status(&e) == Some(404) && e.to_string().contains("No such image") => {
                match self.pull(&image).await {
                    Ok(()) => self.create_once(name, &body).await.map_err(map_err),
                    Err(e) => Err(e),
                }
            }
            r => r.map_err(map_err),
        }
        .map(|created| created.id)
        .map_err(|e| context(e, &format!("container '{container}' could not be created")))
    }

    async fn create_once(
        &self,
        name: &str,
        body: &ContainerCreateBody,
    ) -> Result<ContainerCreateResponse, bollard::errors::Error> {
        let attempt = AtomicU32::new(0);
        retry(&Backoff::ENGINE, "create container", transient, || async {
            let n = attempt.fetch_add(1, Ordering::Relaxed);
            let created = self
                .docker
                .create_container(
                    Some(CreateContainerOptions {
                        name: Some(name.to_string()),
                        ..Default::default()
                    }),
                    body.clone(),
                )
                .await;
            match created {
                // An earlier attempt reached the engine after all: the container is ours.
                Err(e) if n > 0 && status(&e) == Some(409) => {
                    let info = self.docker.inspect_container(name, None).await?;
                    Ok(ContainerCreateResponse {
                        id: info.id.unwrap_or_default(),
                        warnings: Vec::new(),
                    })
                }
                r => r,
            }
        })
        .await
    }

    /// Pulls `image`; without a registry this fails with the engine's reason.
    async fn pull(&self, image: &str) -> Result<(), BackendError> {
        self.report(PodEvent::Pulling {
            image: image.to_string(),
        });
        // A pull that fails for a reason that may pass (a network blip) gets one more try.
        const PULL: Backoff = Backoff {
            base: Duration::from_millis(200),
            cap: Duration::from_secs(1),
            max_attempts: 2,
            max_elapsed: Duration::from_secs(5),
        };
        let result = retry(&PULL, "pull image", transient, || async {
            let mut stream = self.docker.create_image(
                Some(CreateImageOptions {
                    from_image: Some(image.to_string()),
                    ..Default::default()
                }),
                None,
                None,
            );
            while let Some(item) = stream.next().await {
                let info = item?;
                if let Some(err) = info.error_detail.and_then(|d| d.message) {
                    return Err(bollard::errors::Error::DockerResponseServerError {
                        status_code: 500,
                        message: err,
                    });
                }
            }
            Ok(())
        })
        .await;
        result.map_err(|e| {
            let reason = match &e {
                bollard::errors::Error::DockerResponseServerError { message, .. } => {
                    message.clone()
                }
                other => other.to_string(),
            };
            BackendError::Rejected(format!(
                "image '{image}' is not on the engine and could not be pulled: {reason}"
            ))
        })
    }

    async fn start(&self, id: &str, container: &str) -> Result<(), BackendError> {
        match retry(&Backoff::ENGINE, "start container", transient, || {
            self.docker.start_container(id, None)
        })
        .instrument(tracing::debug_span!("start container", container))
        .await
        {
            // 304: already running (an earlier attempt got through).
            Err(e) if status(&e) != Some(304) => Err(context(
                map_err(e),
                &format!("container '{container}' could not start"),
            )),
            _ => Ok(()),
        }
    }

    /// Creates the pod's objects. The order is what the engine needs, and no more: the volume
    /// and the sandbox first (the containers mount the one and join the other; in dial-out
    /// mode the pod's network and its tunnel listener come before the sandbox, which joins
    /// the network), then the containers are created while the sandbox starts, then all
    /// start at once.
    ///
    /// With `prepared`, `pod` is a pod without containers whose volume, directory, network
    /// and running sandbox were made ahead (by the pool): only the containers are made.
    ///
    /// Returns, per container, its id and how to wait for its agent.
    async fn provision_into(
        &self,
        pod: &mut DockerPod,
        spec: &PodSpec,
        build_id: &str,
        pool_id: Option<&str>,
        prepared: bool,
    ) -> Result<HashMap<String, (String, agent::Waiting)>, BackendError> {
        let labels = |container: &str| {
            let mut l = HashMap::from([
                (LABEL_POD.to_string(), pod.id.clone()),
                (LABEL_BUILD.to_string(), build_id.to_string()),
                (LABEL_CONTAINER.to_string(), container.to_string()),
                (LABEL_OWNER.to_string(), self.owner.clone()),
            ]);
            if let Some(p) = pool_id {
                l.insert(LABEL_POOL.to_string(), p.to_string());
            }
            l
        };
        let pod_id = pod.id.clone();
        // Before anything is made: without the agent no step can run.
        let agent_bin = self.agent_binary()?;
        let mut volume_labels = labels("workspace");
        volume_labels.remove(LABEL_CONTAINER);
        let volume = async {
            retry(&Backoff::ENGINE, "create volume", transient, || {
                self.docker.create_volume(VolumeCreateRequest {
                    name: Some(pod.volume.clone()),
                    labels: Some(volume_labels.clone()),
                    ..Default::default()
                })
            })
            .await
            .map_err(|e| context(map_err(e), "the workspace volume could not be created"))
        };
        let dial_out = self.channel == AgentChannel::DialOut;
        let network_name = dial_out.then(|| network::network_name(&pod_id));
        let mut network_labels = labels("network");
        network_labels.remove(LABEL_CONTAINER);
        let sandbox_name = format!("{pod_id}-sandbox");
        let sandbox = async {
            // The pod's network and the listener on its gateway, which the sandbox needs.
            let tunnel = match &network_name {
                Some(name) => {
                    let gateway = network::create(&self.docker, name, network_labels).await?;
                    let listener = DialListener::bind(std::net::SocketAddr::new(gateway, 0))
                        .await
                        .map_err(|e| BackendError::Unavailable(e.to_string()))?;
                    Some(Arc::new(listener))
                }
                None => None,
            };
            self.report(PodEvent::Creating {
                pod: pod_id.clone(),
                container: "sandbox".into(),
                image: self.base_image.clone(),
            });
            let id = self
                .create(
                    &sandbox_name,
                    "sandbox",
                    ContainerCreateBody {
                        image: Some(self.base_image.clone()),
                        entrypoint: Some(vec!["sleep".into()]),
                        cmd: Some(vec!["2147483647".into()]),
                        labels: Some(labels("sandbox")),
                        host_config: Some(HostConfig {
                            pids_limit: Some(16),
                            network_mode: network_name.clone(),
                            security_opt: Some(vec![NO_NEW_PRIVILEGES.into()]),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                )
                .await?;
            Ok::<_, BackendError>((id, tunnel))
        };
        let dir = async {
            let (id, owner) = (pod_id.clone(), self.owner.clone());
            tokio::task::spawn_blocking(move || gc::create_pod_dir(&id, &owner))
                .await
                .map_err(|e| BackendError::Internal(e.to_string()))?
                .map_err(|e| BackendError::Internal(format!("the pod's host directory: {e}")))
        };
        let (sandbox, dir) = match (prepared, pod.dir.clone()) {
            // Joined by name: the engine resolves `container:<name>` as it does an id.
            (true, Some(dir)) => (sandbox_name.clone(), dir),
            _ => {
                // Known before it exists, so a teardown after a failure removes it too.
                pod.network = network_name.clone();
                let (volume, sandbox, dir) = tokio::join!(volume, sandbox, dir);
                if let Ok(d) = &dir {
                    pod.dir = Some(d.clone());
                }
                volume?;
                let (sandbox, tunnel) = sandbox?;
                pod.tunnel = tunnel;
                let dir = dir?;
                agent::open_run_dir(&dir)?;
                (sandbox, dir)
            }
        };
        let tunnel = match (dial_out, &pod.tunnel) {
            (false, _) => None,
            (true, Some(t)) => Some(t.clone()),
            (true, None) => {
                return Err(BackendError::Internal(format!(
                    "pod {pod_id} has no agent tunnel in dial-out mode"
                )));
            }
        };

        let (agent_bin, dir) = (&agent_bin, &dir);
        let mut waiting = HashMap::new();
        let mut creates = Vec::with_capacity(spec.containers.len());
        for (i, c) in spec.containers.iter().enumerate() {
            let body = self.container_body(spec, c, &sandbox, &pod.volume, labels(&c.name));
            self.report(PodEvent::Creating {
                pod: pod_id.clone(),
                container: c.name.clone(),
                image: body.image.clone().unwrap_or_default(),
            });
            let name = format!("{pod_id}-{}", sanitize(&c.name));
            let reach = match &tunnel {
                Some(t) => {
                    let (token, pending) = t
                        .expect(&pod_id, &c.name)
                        .map_err(|e| BackendError::Rejected(e.to_string()))?;
                    waiting.insert(c.name.clone(), agent::Waiting::Dial(pending));
                    agent::Reach::Dial {
                        addr: t.local_addr(),
                        pod: &pod_id,
                        token,
                    }
                }
                None => {
                    let socket = agent::socket_name(dir, i, &c.name);
                    waiting.insert(c.name.clone(), agent::Waiting::Socket(dir.join(&socket)));
                    agent::Reach::Socket { dir, socket }
                }
            };
            creates.push(async move {
                let body = self.run_agent_in(body, agent_bin, reach, &c.name).await?;
                let id = self.create(&name, &c.name, body).await?;
                Ok::<_, BackendError>((c.name.clone(), id))
            });
        }
        let start_sandbox = async {
            if prepared {
                return Ok(());
            }
            self.start(&sandbox, "sandbox").await?;
            self.report(PodEvent::ContainerStarted {
                pod: pod_id.clone(),
                container: "sandbox".into(),
            });
            Ok::<_, BackendError>(())
        };
        let (created, started) = tokio::join!(futures::future::join_all(creates), start_sandbox);
        let created: Vec<(String, String)> = created.into_iter().collect::<Result<_, _>>()?;
        started?;
        self.phase(&pod_id, PodPhase::Created, None);

        let pod_id = &pod_id;
        let starts = created.iter().map(|(name, id)| async move {
            self.start(id, name).await?;
            self.report(PodEvent::ContainerStarted {
                pod: pod_id.clone(),
                container: name.clone(),
            });
            Ok::<_, BackendError>(())
        });
        futures::future::join_all(starts)
            .await
            .into_iter()
            .collect::<Result<Vec<()>, _>>()?;
        self.phase(pod_id, PodPhase::Started, None);
        Ok(created
            .into_iter()
            .filter_map(|(name, id)| {
                let w = waiting.remove(&name)?;
                Some((name, (id, w)))
            })
            .collect())
    }

    /// Provisions a pod on the engine (the cold path).
    async fn provision_cold(
        &self,
        spec: &PodSpec,
        build_id: &str,
        pool_id: Option<&str>,
    ) -> Result<DockerPod, BackendError> {
        // A sandbox the pool started ahead saves its start, the longest call of the cold
        // path (pool pods make their own: the pool's sandboxes are for new templates).
        let prepared = match (&self.pool, pool_id) {
            (Some(pool), None) if !spec.containers.is_empty() => pool.take_sandbox(self),
            _ => None,
        };
        let is_prepared = prepared.is_some();
        let mut pod = prepared.unwrap_or_else(|| {
            let id = pod_id(&spec.name);
            DockerPod {
                docker: self.docker.clone(),
                volume: format!("{id}-workspace"),
                id,
                dir: None,
                network: None,
                tunnel: None,
                containers: HashMap::new(),
            }
        });
        let id = pod.id.clone();
        self.phase(
            &id,
            PodPhase::Placed,
            Some(if is_prepared {
                "docker engine, ready sandbox"
            } else {
                "docker engine"
            }),
        );
        let span = tracing::debug_span!("provision", pod = %id, build = build_id);
        match self
            .provision_into(&mut pod, spec, build_id, pool_id, is_prepared)
            .instrument(span)
            .await
        {
            Ok(mut containers) => {
                // Ready when every container's agent answers.
                let expected = spec
                    .containers
                    .iter()
                    .filter_map(|c| {
                        let (id, waiting) = containers.remove(&c.name)?;
                        Some((c.name.clone(), id, waiting, c.resources.limit_memory_bytes))
                    })
                    .collect();
                let ready = agent::connect_all(&self.docker, expected)
                    .instrument(tracing::debug_span!("agents ready", pod = %id))
                    .await;
                match ready {
                    Ok(runners) => {
                        self.phase(&id, PodPhase::AgentConnected, None);
                        pod.containers = runners;
                        Ok(pod)
                    }
                    Err(e) => {
                        let _ = pod.teardown().await;
                        Err(e)
                    }
                }
            }
            Err(e) => {
                let _ = pod.teardown().await;
                Err(e)
            }
        }
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
        // Kubernetes semantics: `command` replaces the entrypoint, `args` the cmd; neither
        // keeps the image's. [`agent`] then makes the result the agent's child.
        let entrypoint = c.command.clone().filter(|v| !v.is_empty());
        let cmd = c.args.clone().filter(|v| !v.is_empty());
        let env: Vec<String> = spec
            .env
            .iter()
            .chain(c.env.iter())
            .map(|(k, v)| format!("{k}={v}"))
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
                nano_cpus: r.limit_cpu_millis.map(|m| {
                    i64::try_from(m)
                        .unwrap_or(i64::MAX)
                        .saturating_mul(1_000_000)
                }),
                cpu_shares: r.request_cpu_millis.map(|m| {
                    (i64::try_from(m).unwrap_or(i64::MAX).saturating_mul(1024) / 1000).max(2)
                }),
                pids_limit: Some(
                    r.limit_pids
                        .map_or(PIDS_LIMIT, |n| i64::try_from(n).unwrap_or(i64::MAX)),
                ),
                privileged: Some(c.privileged),
                // No step gains privileges through a setuid binary (`sudo`, `su`); privilege
                // is the template's to ask and the operator's to allow (ContainerPolicy).
                security_opt: (!c.privileged).then(|| vec![NO_NEW_PRIVILEGES.into()]),
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

    async fn provision(&self, req: &ProvisionRequest) -> Result<Box<dyn Pod>, BackendError> {
        EVENTS
            .scope(req.events.clone(), self.provision_request(req))
            .await
    }

    async fn shutdown(&self) -> Result<(), BackendError> {
        match &self.pool {
            Some(pool) => pool.drain().await,
            None => Ok(()),
        }
    }

    async fn collect_orphans(&self, scope: &gc::Scope) -> Result<Vec<String>, BackendError> {
        let removed = gc::collect(&self.docker, scope).await?;
        Ok(removed.summary().lines().map(str::to_string).collect())
    }

    fn metrics(&self) -> Vec<valet_backend::Metric> {
        use valet_backend::{Metric, MetricKind};
        let Some(pool) = &self.pool else {
            return Vec::new();
        };
        vec![
            Metric {
                name: "warm_pods",
                help: "Pods ready in the warm pool.",
                kind: MetricKind::Gauge,
                value: pool.total_ready() as f64,
            },
            Metric {
                name: "warm_pool_hits_total",
                help: "Pods handed out from the warm pool.",
                kind: MetricKind::Counter,
                value: pool.hits() as f64,
            },
        ]
    }
}

impl DockerBackend {
    /// Drains the warm pool (see [`Backend::shutdown`]).
    pub async fn drain(&self) -> Result<(), BackendError> {
        Backend::shutdown(self).await
    }

    async fn provision_request(
        &self,
        req: &ProvisionRequest,
    ) -> Result<Box<dyn Pod>, BackendError> {
        let (spec, build_id) = (&req.spec, req.build.id.as_str());
        let pod = match self.pool.as_ref().and_then(|pool| pool.take(self, spec)) {
            Some(pod) => {
                for phase in [
                    PodPhase::Placed,
                    PodPhase::Created,
                    PodPhase::Started,
                    PodPhase::AgentConnected,
                ] {
                    self.phase(
                        &pod.id,
                        phase,
                        (phase == PodPhase::Placed).then_some("warm pool"),
                    );
                }
                pod
            }
            None => self.provision_cold(spec, build_id, None).await?,
        };
        Ok(Box::new(pod))
    }
}

/// A pod on Docker.
pub struct DockerPod {
    docker: Docker,
    id: String,
    volume: String,
    /// The pod's host directory (under [`gc::pod_dir_root`]), once made.
    dir: Option<PathBuf>,
    /// Dial-out mode: the pod's network (named before it is made) and the listener its
    /// agents dial, on the network's gateway. Dropped with the pod.
    network: Option<String>,
    tunnel: Option<Arc<DialListener>>,
    containers: HashMap<String, Arc<dyn StepRunner>>,
}

impl DockerPod {
    /// The name of the pod's workspace volume.
    pub fn volume(&self) -> &str {
        &self.volume
    }

    /// The pod's directory on the host, where the agents' sockets live.
    pub fn host_dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The pod's own network, in dial-out mode.
    pub fn network(&self) -> Option<&str> {
        self.network.as_deref()
    }

    /// Where the pod's agents dial in, in dial-out mode.
    pub fn tunnel_addr(&self) -> Option<std::net::SocketAddr> {
        self.tunnel.as_ref().map(|t| t.local_addr())
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

    /// Removes the pod's containers (found by label, so also those of a provisioning that
    /// failed half-way), its network, its volume and its host directory. A removal that
    /// fails does not stop the others: what can go, goes, and the first error is returned.
    #[tracing::instrument(level = "debug", skip(self), fields(pod = %self.id))]
    async fn teardown(&self) -> Result<(), BackendError> {
        let mut first_error = None;
        let mut note = |r: Result<(), BackendError>| {
            if let Err(e) = r {
                tracing::warn!(pod = %self.id, error = %e, "teardown");
                first_error.get_or_insert(e);
            }
        };
        note(self.remove_containers().await);
        if let Some(tunnel) = &self.tunnel {
            tunnel.forget(&self.id);
        }
        // Once no container is attached to it.
        if let Some(network) = &self.network {
            note(network::remove(&self.docker, network).await.map(|_| ()));
        }
        note(
            gc::remove_volume_when_free(&self.docker, &self.volume)
                .instrument(tracing::debug_span!("remove volume", volume = %self.volume))
                .await
                .map(|_| ()),
        );
        if let Some(dir) = &self.dir {
            note(
                gc::remove_pod_dir(dir).map_err(|e| {
                    BackendError::Internal(format!("removing {}: {e}", dir.display()))
                }),
            );
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// How long a teardown waits for the engine to finish removing a pod's containers (a
/// container flooded by its processes takes a while to die).
const CONTAINERS_GONE_WITHIN: Duration = Duration::from_secs(30);

impl DockerPod {
    /// The pod's containers, found by label: `(is the sandbox, id)`.
    async fn containers_left(&self) -> Result<Vec<(bool, String)>, BackendError> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{LABEL_POD}={}", self.id)],
        )]);
        let found = retry(&Backoff::ENGINE, "list containers", transient, || {
            self.docker.list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters.clone()),
                ..Default::default()
            }))
        })
        .await
        .map_err(map_err)?;
        Ok(found
            .into_iter()
            .filter_map(|c| {
                let sandbox = c
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(LABEL_CONTAINER))
                    .is_some_and(|n| n == "sandbox");
                c.id.map(|id| (sandbox, id))
            })
            .collect())
    }

    /// Removes the pod's containers, members first (all at once), the sandbox (whose
    /// namespace they join) last; then waits, bounded, until the engine lists none of them:
    /// a removal the engine reports as already in progress has not finished, and the volume
    /// stays in use until it has.
    async fn remove_containers(&self) -> Result<(), BackendError> {
        let (sandboxes, members): (Vec<_>, Vec<_>) = self
            .containers_left()
            .await?
            .into_iter()
            .partition(|(sandbox, _)| *sandbox);
        let mut first_error = None;
        for group in [members, sandboxes] {
            let removals = group
                .iter()
                .map(|(_, id)| gc::remove_container(&self.docker, id));
            for r in futures::future::join_all(removals).await {
                if let Err(e) = r {
                    first_error.get_or_insert(e);
                }
            }
        }
        let deadline = tokio::time::Instant::now() + CONTAINERS_GONE_WITHIN;
        loop {
            let left = self.containers_left().await?;
            if left.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(first_error.unwrap_or_else(|| {
                    BackendError::Internal(format!(
                        "{} container(s) of pod {} were still there {} s after their removal",
                        left.len(),
                        self.id,
                        CONTAINERS_GONE_WITHIN.as_secs()
                    ))
                }));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            // A removal that failed (the engine could not kill a flooded container at
            // once) is asked again.
            for (_, id) in &left {
                if let Err(e) = gc::remove_container(&self.docker, id).await {
                    tracing::debug!(container = %id, error = %e, "removal asked again");
                }
            }
        }
    }
}

fn status(e: &bollard::errors::Error) -> Option<u16> {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// An engine error as a backend error, in the engine's words (its message, without
/// bollard's "Docker responded with status code" wrapping).
fn map_err(e: bollard::errors::Error) -> BackendError {
    let text = match &e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    };
    match status(&e) {
        Some(404) => BackendError::NotFound(text),
        Some(400..=499) => BackendError::Rejected(text),
        Some(_) => BackendError::Internal(text),
        None => BackendError::Unavailable(format!("docker: {text}")),
    }
}

/// `e` with `what` in front of its message, keeping its kind.
fn context(e: BackendError, what: &str) -> BackendError {
    match e {
        BackendError::Unavailable(m) => BackendError::Unavailable(format!("{what}: {m}")),
        BackendError::Rejected(m) => BackendError::Rejected(format!("{what}: {m}")),
        BackendError::NotFound(m) => BackendError::NotFound(format!("{what}: {m}")),
        BackendError::Lost(m) => BackendError::Lost(format!("{what}: {m}")),
        BackendError::Internal(m) => BackendError::Internal(format!("{what}: {m}")),
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
