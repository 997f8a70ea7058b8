//! A [`valet_backend::StepRunner`] that runs steps through an agent over a gRPC channel: a
//! unix socket, or the tunnel an agent dialled ([`crate::tunnel`]). Any backend whose
//! containers run the agent uses it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tonic::transport::{Channel, Endpoint, Uri};
use valet_backend::{
    BackendError, Command, Execution, ExecutionHandle, ExitStatus, Output, StepRunner,
};

use crate::proto::step_runner_client::StepRunnerClient;
use crate::proto::{CancelRequest, PingRequest, RunRequest, exited, run_event};

/// Output chunks buffered between the gRPC stream and the caller: a caller that reads
/// slowly slows the stream down (and the process with it).
const OUTPUT: usize = 64;

/// Why talking to an agent failed. `to` says which agent: its socket, or its pod and
/// container and the tunnel it dials.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot reach the agent at {to}: {source}")]
    Transport {
        to: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("the agent at {to} does not answer: {status}")]
    Ping { to: String, status: tonic::Status },
    #[error("the agent at {to} did not answer within {waited:?}: {last}")]
    Timeout {
        to: String,
        waited: Duration,
        last: String,
    },
}

/// Runs commands through one agent, over whatever carries its channel: a unix socket the
/// pod's directory offers ([`AgentRunner::connect`]) or a tunnel the agent dialled
/// ([`crate::tunnel`]).
#[derive(Clone)]
pub struct AgentRunner {
    client: StepRunnerClient<Channel>,
    to: String,
    workspace: PathBuf,
    output_cap: u64,
    name: String,
}

static EXECUTION: AtomicU64 = AtomicU64::new(0);

impl AgentRunner {
    /// Connects to the agent listening on `socket` and checks that it answers. Relative
    /// working directories of commands are taken relative to `workspace` (as the agent sees it).
    pub async fn connect(socket: &Path, workspace: &Path) -> Result<Self, ConnectError> {
        let path = socket.to_path_buf();
        let to = socket.display().to_string();
        // The URI is required by the API and unused: the connector dials the socket.
        let channel = Endpoint::from_static("http://valet-agent")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await
            .map_err(|source| ConnectError::Transport {
                to: to.clone(),
                source,
            })?;
        let runner = Self::over_channel(channel, to, workspace).await?;
        let name = socket
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(runner.with_name(name))
    }

    /// A runner over `channel`, however it reaches the agent, once the agent answers. `to`
    /// names the agent in errors.
    pub async fn over_channel(
        channel: Channel,
        to: impl Into<String>,
        workspace: &Path,
    ) -> Result<Self, ConnectError> {
        let to = to.into();
        let mut client = StepRunnerClient::new(channel);
        client
            .ping(PingRequest {})
            .await
            .map_err(|status| ConnectError::Ping {
                to: to.clone(),
                status,
            })?;
        Ok(AgentRunner {
            client,
            name: to.clone(),
            to,
            workspace: workspace.to_path_buf(),
            output_cap: 0,
        })
    }

    /// Connects, retrying every few milliseconds while the agent is not up yet (the socket
    /// missing or refusing), for at most `limit`.
    pub async fn wait_for(
        socket: &Path,
        workspace: &Path,
        limit: Duration,
    ) -> Result<Self, ConnectError> {
        let started = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            match Self::connect(socket, workspace).await {
                Ok(runner) => return Ok(runner),
                Err(e) if started.elapsed() >= limit => {
                    return Err(ConnectError::Timeout {
                        to: socket.display().to_string(),
                        waited: limit,
                        last: e.to_string(),
                    });
                }
                Err(_) => {
                    tokio::time::sleep(pause).await;
                    // Short pauses: a pod is ready only when every agent answers.
                    pause = (pause * 2).min(Duration::from_millis(5));
                }
            }
        }
    }

    /// Caps each command's output (stdout and stderr together) at `bytes`; 0 leaves the
    /// agent's own cap.
    pub fn with_output_cap(mut self, bytes: u64) -> Self {
        self.output_cap = bytes;
        self
    }

    /// A name for messages (by default the socket's file stem: the container's name on Docker).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Which agent this runner talks to (its socket, or its tunnel), for messages.
    pub fn target(&self) -> &str {
        &self.to
    }

    /// Whether the agent answers now.
    pub async fn ping(&self) -> Result<(), BackendError> {
        self.client
            .clone()
            .ping(PingRequest {})
            .await
            .map(|_| ())
            .map_err(|s| lost(&self.name, &s))
    }
}

fn lost(name: &str, status: &tonic::Status) -> BackendError {
    BackendError::Lost(format!(
        "the agent of container '{name}' went away: {}",
        status.message()
    ))
}

fn map_start_error(name: &str, status: tonic::Status) -> BackendError {
    use tonic::Code;
    match status.code() {
        Code::InvalidArgument
        | Code::NotFound
        | Code::FailedPrecondition
        | Code::PermissionDenied
        | Code::AlreadyExists => BackendError::Rejected(status.message().to_string()),
        Code::ResourceExhausted => BackendError::Unavailable(status.message().to_string()),
        Code::Unavailable | Code::Unknown | Code::Cancelled => lost(name, &status),
        _ => BackendError::Internal(status.message().to_string()),
    }
}

/// What the pump task learned by the end of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ending {
    pub status: ExitStatus,
    /// Whether output was cut at the cap (the output holds a marker line).
    pub truncated: bool,
    pub dropped_bytes: u64,
}

#[async_trait::async_trait]
impl StepRunner for AgentRunner {
    async fn start(&self, cmd: Command) -> Result<Execution, BackendError> {
        self.start_agent(cmd)
            .await
            .map(|(output, handle)| Execution {
                output,
                handle: Box::new(handle),
            })
    }
}

impl AgentRunner {
    /// [`StepRunner::start`] with the concrete handle (which tells about truncation).
    pub async fn start_agent(
        &self,
        cmd: Command,
    ) -> Result<(mpsc::Receiver<Output>, AgentExecution), BackendError> {
        if cmd.argv.is_empty() {
            return Err(BackendError::Rejected("empty command".into()));
        }
        let id = format!(
            "{}-{}",
            std::process::id(),
            EXECUTION.fetch_add(1, Ordering::Relaxed)
        );
        let cwd = match &cmd.cwd {
            Some(p) if p.is_absolute() => p.clone(),
            Some(p) => self.workspace.join(p),
            None => self.workspace.clone(),
        };
        let request = RunRequest {
            execution_id: id.clone(),
            argv: cmd.argv,
            env: cmd.env.into_iter().collect(),
            cwd: cwd.to_string_lossy().into_owned(),
            user: cmd.user.unwrap_or_default(),
            stdin: cmd.stdin,
            output_cap: cmd.output_cap.unwrap_or(self.output_cap),
        };
        let mut client = self.client.clone();
        let mut stream = client
            .run(request)
            .await
            .map_err(|s| map_start_error(&self.name, s))?
            .into_inner();
        let (tx, rx) = mpsc::channel(OUTPUT);
        let (end_tx, end_rx) = oneshot::channel();
        // Set when the caller cancels: it no longer reads output, so the pump stops
        // forwarding instead of waiting for room in a channel nobody empties.
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let name = self.name.clone();
        let pump = tokio::spawn(async move {
            let mut tx = Some(tx);
            let ending = loop {
                let event = match stream.message().await {
                    Ok(Some(m)) => m.event,
                    Ok(None) => {
                        break Err(BackendError::Lost(format!(
                            "the agent of container '{name}' ended the step without an exit status"
                        )));
                    }
                    Err(s) => break Err(lost(&name, &s)),
                };
                let chunk = match event {
                    Some(run_event::Event::Stdout(b)) => Output::Stdout(b.into()),
                    Some(run_event::Event::Stderr(b)) => Output::Stderr(b.into()),
                    Some(run_event::Event::Exited(e)) => {
                        let status = match e.status {
                            Some(exited::Status::Code(c)) => ExitStatus::Code(c),
                            Some(exited::Status::Signal(s)) => ExitStatus::Signal(s),
                            None => ExitStatus::Code(-1),
                        };
                        break Ok(Ending {
                            status,
                            truncated: e.truncated,
                            dropped_bytes: e.dropped_bytes,
                        });
                    }
                    Some(run_event::Event::Started(_)) | None => continue,
                };
                // Keep reading when nobody listens, so the process is not held up.
                if let Some(sender) = &tx {
                    let forwarded = tokio::select! {
                        sent = sender.send(chunk) => sent.is_ok(),
                        _ = stop_rx.wait_for(|stop| *stop) => false,
                    };
                    if !forwarded {
                        tx = None;
                    }
                }
            };
            // All output is in the channel before the end is known.
            drop(tx);
            let _ = end_tx.send(ending);
        });
        Ok((
            rx,
            AgentExecution {
                client,
                id,
                end: Some(end_rx),
                ending: None,
                stop: stop_tx,
                pump,
                name: self.name.clone(),
            },
        ))
    }
}

/// A command running in an agent.
pub struct AgentExecution {
    client: StepRunnerClient<Channel>,
    id: String,
    end: Option<oneshot::Receiver<Result<Ending, BackendError>>>,
    ending: Option<Ending>,
    stop: tokio::sync::watch::Sender<bool>,
    pump: tokio::task::JoinHandle<()>,
    name: String,
}

impl AgentExecution {
    /// How the command ended, with what the agent said about its output.
    pub async fn ending(&mut self) -> Result<Ending, BackendError> {
        if let Some(e) = self.ending {
            return Ok(e);
        }
        let Some(end) = self.end.as_mut() else {
            return Err(BackendError::Lost(format!(
                "the step in container '{}' was lost",
                self.name
            )));
        };
        // Cancel-safe: the receiver stays in place until it yields.
        let result = end.await.unwrap_or_else(|_| {
            Err(BackendError::Lost(format!(
                "the step in container '{}' was lost",
                self.name
            )))
        });
        self.end = None;
        let e = result?;
        self.ending = Some(e);
        Ok(e)
    }
}

#[async_trait::async_trait]
impl ExecutionHandle for AgentExecution {
    async fn wait(&mut self) -> Result<ExitStatus, BackendError> {
        self.ending().await.map(|e| e.status)
    }

    async fn cancel(&mut self, grace: Duration) -> Result<ExitStatus, BackendError> {
        if let Some(e) = self.ending {
            return Ok(e.status);
        }
        self.stop.send_replace(true);
        let span = tracing::info_span!("cancel", container = %self.name, execution = %self.id);
        let request = CancelRequest {
            execution_id: self.id.clone(),
            grace_ms: grace.as_millis().try_into().unwrap_or(u64::MAX),
        };
        tracing::Instrument::instrument(self.client.cancel(request), span)
            .await
            .map_err(|s| lost(&self.name, &s))?;
        self.wait().await
    }
}

impl Drop for AgentExecution {
    fn drop(&mut self) {
        // Ends the stream: the agent kills a process whose caller went away.
        if self.ending.is_none() {
            self.pump.abort();
        }
    }
}
