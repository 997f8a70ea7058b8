//! `valet-backend`: the contract between the runtime and the places pods run.
//!
//! A [`Backend`] provisions a [`Pod`] for a [`ProvisionRequest`] (a resolved [`PodSpec`] and
//! who asks for it) and the pod hands out a [`StepRunner`] per container. The runtime knows
//! only these traits; each backend (`valet-local`, `valet-docker`, …) lives in its own crate,
//! is built in one place (`valet-backends`), and passes the same conformance suite
//! ([`conformance`]). [`fake::FakeBackend`] records what it is asked, for tests above.
//!
//! Not here: any concrete backend, the planner, the parser.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

pub mod conformance;
pub mod fake;
pub mod owner;
pub mod pod;
pub mod policy;
pub mod request;

pub use pod::{ContainerSpec, Demand, EnvRef, PodSpec, Port, Resources, Volume};
pub use policy::{ContainerPolicy, PolicyError};
pub use request::{BuildIdentity, PodEvent, PodEvents, PodPhase, ProvisionRequest};

/// Why a backend operation failed. Retry policy is decided above, in one place.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend cannot be reached or is not running (retryable).
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// The request itself is wrong (an unknown container, a bad spec); retrying will not help.
    #[error("rejected: {0}")]
    Rejected(String),
    #[error("not found: {0}")]
    NotFound(String),
    /// The pod or container went away while in use.
    #[error("lost: {0}")]
    Lost(String),
    #[error("{0}")]
    Internal(String),
}

/// One command to run in one container of a pod.
#[derive(Debug, Clone)]
pub struct Command {
    /// The program and its arguments, e.g. `["/bin/sh", "-xe", "-c", "make"]`.
    pub argv: Vec<String>,
    /// Environment given to the process (the backend adds nothing but what it must, e.g. `PATH`).
    pub env: BTreeMap<String, String>,
    /// Working directory; relative paths are relative to the pod's workspace.
    pub cwd: Option<PathBuf>,
    /// Run as this user (`uid` or `uid:gid`), when the backend supports it.
    pub user: Option<String>,
    /// Data written to the process's stdin, then stdin is closed.
    pub stdin: Option<Vec<u8>>,
    /// At most this much output (stdout and stderr together) to pass on, instead of the
    /// backend's own cap, for a command whose output is data, not a log (a tar stream).
    /// `None`: the backend's default. A backend without a cap of its own ignores it.
    pub output_cap: Option<u64>,
}

/// A piece of a running command's output, in the order it was produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Stdout(bytes::Bytes),
    Stderr(bytes::Bytes),
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    /// Killed by this signal (e.g. 9 after a timeout's grace period).
    Signal(i32),
}

impl ExitStatus {
    pub fn success(self) -> bool {
        self == ExitStatus::Code(0)
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => write!(f, "signal {s}"),
        }
    }
}

impl Command {
    /// A command with these arguments, no extra environment, in the workspace.
    pub fn new<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Command {
            argv: argv.into_iter().map(Into::into).collect(),
            env: BTreeMap::new(),
            cwd: None,
            user: None,
            stdin: None,
            output_cap: None,
        }
    }

    /// `/bin/sh -c script`.
    pub fn shell(script: impl Into<String>) -> Self {
        Command::new(["/bin/sh".to_string(), "-c".to_string(), script.into()])
    }
}

/// A running command: its output arrives on `output`, its end on `wait`.
///
/// `wait` is cancel-safe: a caller may drop its future (e.g. in a `select!` against a
/// timeout) and then call `cancel`.
pub struct Execution {
    pub output: tokio::sync::mpsc::Receiver<Output>,
    pub handle: Box<dyn ExecutionHandle>,
}

#[async_trait::async_trait]
pub trait ExecutionHandle: Send {
    /// Waits for the process to end (after all output has been delivered to `output`).
    async fn wait(&mut self) -> Result<ExitStatus, BackendError>;
    /// Ends the whole process tree: TERM, then after `grace` KILL. Returns once it is gone.
    async fn cancel(&mut self, grace: Duration) -> Result<ExitStatus, BackendError>;
    /// Why the command ended as it did, in words, when the backend knows more than the
    /// exit status: e.g. "container 'maven' was killed: out of memory (limit 64 MiB)",
    /// confirmed from the engine's state. Asked after `wait` returned a failure.
    async fn explain(&mut self) -> Option<String> {
        None
    }
}

/// Runs commands in one container of a pod.
#[async_trait::async_trait]
pub trait StepRunner: Send + Sync {
    async fn start(&self, cmd: Command) -> Result<Execution, BackendError>;
}

/// A provisioned pod: containers sharing a workspace (and, on container backends, localhost).
#[async_trait::async_trait]
pub trait Pod: Send + Sync {
    /// A stable id for logs and events.
    fn id(&self) -> &str;
    /// The workspace path as the steps see it.
    fn workspace(&self) -> PathBuf;
    /// Whether the pod's files are the host's own (the local backend), so that valet
    /// writes into its workspace itself rather than through a command in the pod.
    fn host_files(&self) -> bool {
        false
    }
    /// The runner of container `name` (one of the spec's containers).
    fn runner(&self, container: &str) -> Result<std::sync::Arc<dyn StepRunner>, BackendError>;
    /// Removes everything the pod made. Safe to call more than once.
    async fn teardown(&self) -> Result<(), BackendError>;
}

/// Where pods run.
#[async_trait::async_trait]
pub trait Backend: Send + Sync {
    /// A short name for messages: `local`, `docker`, …
    fn name(&self) -> &'static str;
    /// Something the user should be told once per build about how this backend runs
    /// pipelines (the local backend: images are not used). The runtime emits it as a notice.
    fn notice(&self) -> Option<String> {
        None
    }
    async fn provision(&self, req: &ProvisionRequest) -> Result<Box<dyn Pod>, BackendError>;

    /// Stops what the backend keeps running between pods (warm pools, connections) and
    /// removes it. Called once when its user is done with it; provisioning after it fails.
    async fn shutdown(&self) -> Result<(), BackendError> {
        Ok(())
    }

    /// Removes what processes of `scope` left on this backend (pods of a killed run or
    /// controller), returning one line per removed object (`container valet-pod-1a2b`).
    async fn collect_orphans(&self, _scope: &owner::Scope) -> Result<Vec<String>, BackendError> {
        Ok(Vec::new())
    }

    /// What of `spec` this backend will not give the pod, one sentence each, for the
    /// runtime to tell the user before the pod starts (nothing is dropped silently). By
    /// default: every volume, since the shared workspace is the only one a backend must
    /// provide.
    fn unsupported(&self, spec: &PodSpec) -> Vec<String> {
        spec.volumes
            .iter()
            .map(|v| {
                let source = v.source.as_deref().map(|s| format!(" {s}")).unwrap_or_default();
                format!(
                    "the {} backend does not mount volumes: {}{source} at {} is left out (only the workspace is shared)",
                    self.name(),
                    v.kind,
                    v.mount_path
                )
            })
            .collect()
    }

    /// Gauges and counters of the backend's own (warm pool sizes, pods taken from it), for
    /// `/metrics`: `(name, help, value)`, names without the `valet_backend_` prefix.
    fn metrics(&self) -> Vec<Metric> {
        Vec::new()
    }
}

/// One number a backend exposes (see [`Backend::metrics`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// `warm_pods`, `warm_pool_hits_total`: lowercase, underscores.
    pub name: &'static str,
    pub help: &'static str,
    pub kind: MetricKind,
    pub value: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Gauge,
    Counter,
}
