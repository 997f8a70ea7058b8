//! The agent's side of the protocol: runs each step through [`valet_process::Runner`] (a
//! process group, output with backpressure and a cap, another user, TERM, grace, KILL),
//! streams its output as gRPC events, cancels it on request, and runs the container's own
//! command (a sidecar) beside the steps.

use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument;
use valet_process::{Control, Exit, Runner, SpawnError, Spec, Stream};

use crate::proto::step_runner_server::{StepRunner, StepRunnerServer};
use crate::proto::{
    CancelReply, CancelRequest, Exited, PingReply, PingRequest, RunEvent, RunRequest, Started,
    exited, run_event,
};
use crate::reaper::Reaper;

/// The default output cap of a step: stdout and stderr together.
pub const DEFAULT_OUTPUT_CAP: u64 = 64 * 1024 * 1024;
/// Steps running at once in one agent; more are refused (`resource exhausted`).
pub const MAX_RUNNING: usize = 1024;
/// The longest grace period a cancel may ask for.
pub const MAX_GRACE: Duration = Duration::from_secs(600);
/// Events buffered between the pipe readers and the gRPC stream. Small on purpose: when the
/// caller reads slowly the readers wait, the pipes fill and the process blocks on write,
/// instead of the agent's memory growing.
const EVENTS: usize = 16;

type Event = Result<RunEvent, Status>;

/// The agent's state, shared by the gRPC service and the signal handling.
#[derive(Clone)]
pub struct Agent {
    reaper: Reaper,
    runner: Runner,
    output_cap: u64,
    /// The executions running, by id.
    running: Arc<Mutex<HashMap<String, Control>>>,
    sidecar: Arc<Mutex<Option<i32>>>,
}

impl Agent {
    pub fn new(reaper: Reaper, output_cap: u64) -> Self {
        Agent {
            runner: Runner::with_reaper(reaper.clone()),
            reaper,
            output_cap,
            running: Arc::default(),
            sidecar: Arc::default(),
        }
    }

    /// The gRPC service.
    pub fn service(&self) -> StepRunnerServer<Service> {
        StepRunnerServer::new(Service {
            agent: self.clone(),
        })
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Control>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the container's own command as a child; its exit is logged and the agent
    /// keeps serving. Its output goes where the agent's goes (the container's log).
    pub fn start_sidecar(&self, argv: &[String]) -> std::io::Result<u32> {
        let Some((program, args)) = argv.split_first() else {
            return Err(std::io::Error::other("empty sidecar command"));
        };
        let mut cmd = std::process::Command::new(program);
        cmd.args(args).stdin(std::process::Stdio::null());
        let (child, exit) = self.reaper.spawn(&mut cmd)?;
        let pid = child.id();
        *self.sidecar.lock().unwrap_or_else(|e| e.into_inner()) = Some(pid as i32);
        let sidecar = self.sidecar.clone();
        let name = program.clone();
        tokio::spawn(async move {
            if let Ok(exit) = exit.await {
                tracing::info!(command = %name, pid, %exit, "the container's command exited; steps are still served");
                *sidecar.lock().unwrap_or_else(|e| e.into_inner()) = None;
            }
        });
        tracing::info!(command = %program, pid, "started the container's command");
        Ok(pid)
    }

    /// Forwards `sig` to the sidecar and every running step's group, then waits (at most
    /// `limit`) for them to end.
    pub async fn forward_and_wait(&self, sig: Signal, limit: Duration) {
        let sidecar = *self.sidecar.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pid) = sidecar {
            let _ = kill(Pid::from_raw(pid), sig);
        }
        let steps: Vec<Control> = self.running().values().cloned().collect();
        for s in &steps {
            s.signal(sig);
        }
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let sidecar_alive = self
                .sidecar
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some();
            let groups_alive = steps.iter().any(|s| valet_process::group_alive(s.pgid()));
            if (!sidecar_alive && !groups_alive) || tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn cancel(&self, id: &str, grace: Duration) -> bool {
        let Some(control) = self.running().get(id).cloned() else {
            return false;
        };
        let span = tracing::info_span!("cancel", execution = id);
        control.cancel(grace.min(MAX_GRACE)).instrument(span).await;
        true
    }
}

fn spawn_status(e: SpawnError) -> Status {
    let message = e.to_string();
    match e {
        SpawnError::Empty | SpawnError::BadUser(_) => Status::invalid_argument(message),
        SpawnError::NoDirectory(_) => Status::failed_precondition(message),
        SpawnError::NotFound(_) => Status::not_found(message),
        SpawnError::PermissionDenied { .. } => Status::permission_denied(message),
        SpawnError::Io { .. } => Status::internal(message),
    }
}

fn output_event(stream: Stream, data: bytes::Bytes) -> Event {
    let data = data.to_vec();
    Ok(RunEvent {
        event: Some(match stream {
            Stream::Stdout => run_event::Event::Stdout(data),
            Stream::Stderr => run_event::Event::Stderr(data),
        }),
    })
}

/// The gRPC service of one agent.
pub struct Service {
    agent: Agent,
}

type EventStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<RunEvent, Status>> + Send>>;

#[tonic::async_trait]
impl StepRunner for Service {
    type RunStream = EventStream;

    async fn run(&self, request: Request<RunRequest>) -> Result<Response<Self::RunStream>, Status> {
        let mut req = request.into_inner();
        let id = req.execution_id.clone();
        if id.is_empty() {
            return Err(Status::invalid_argument("no execution id"));
        }
        let agent = &self.agent;
        let limit = if req.output_cap == 0 {
            agent.output_cap
        } else {
            req.output_cap
        };
        let stdin = req.stdin.take();
        let span = tracing::info_span!("step", execution = %id, argv = ?req.argv);
        {
            let running = agent.running();
            if running.contains_key(&id) {
                return Err(Status::already_exists(format!("execution {id} is running")));
            }
            if running.len() >= MAX_RUNNING {
                return Err(Status::resource_exhausted(format!(
                    "{MAX_RUNNING} steps are running in this container already"
                )));
            }
        }
        let spec = Spec {
            argv: req.argv,
            env: req.env.into_iter().collect(),
            clear_env: false,
            cwd: (!req.cwd.is_empty()).then(|| PathBuf::from(&req.cwd)),
            user: (!req.user.is_empty()).then_some(req.user),
            stdin,
            output_cap: Some(limit),
            marks: valet_process::Marks::new(),
        };
        let mut process = agent.runner.spawn(spec).map_err(spawn_status)?;
        let pid = process.pid();
        tracing::debug!(pid, "started");
        let control = process.control();
        agent.running().insert(id.clone(), control.clone());

        let (tx, rx) = mpsc::channel(EVENTS);
        // The channel is empty: the first event always fits.
        let _ = tx.try_send(Ok(RunEvent {
            event: Some(run_event::Event::Started(Started { pid })),
        }));
        process.stream(tx.clone(), output_event);
        let running = agent.running.clone();
        tokio::spawn(
            async move {
                let finished = tokio::select! {
                    f = process.wait() => Some(f),
                    _ = tx.closed() => {
                        // The caller went away before the end: leave nothing running.
                        tracing::info!("the caller went away: KILL to the group");
                        control.kill();
                        None
                    }
                };
                running.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                let Some(finished) = finished else { return };
                let dropped = finished.dropped;
                if dropped > 0 {
                    let marker = format!(
                        "\n[valet-agent: output cut here at the cap of {}; {dropped} more bytes dropped]\n",
                        crate::human_bytes(limit)
                    );
                    let stream = finished.cut_on.unwrap_or(Stream::Stdout);
                    let _ = tx.send(output_event(stream, marker.into())).await;
                }
                tracing::debug!(exit = %finished.exit, dropped, "exited");
                let status = match finished.exit {
                    Exit::Code(c) => exited::Status::Code(c),
                    Exit::Signal(s) => exited::Status::Signal(s),
                };
                let _ = tx
                    .send(Ok(RunEvent {
                        event: Some(run_event::Event::Exited(Exited {
                            status: Some(status),
                            truncated: dropped > 0,
                            dropped_bytes: dropped,
                        })),
                    }))
                    .await;
            }
            .instrument(span),
        );
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn cancel(
        &self,
        request: Request<CancelRequest>,
    ) -> Result<Response<CancelReply>, Status> {
        let req = request.into_inner();
        let found = self
            .agent
            .cancel(&req.execution_id, Duration::from_millis(req.grace_ms))
            .await;
        Ok(Response::new(CancelReply { found }))
    }

    async fn ping(&self, _request: Request<PingRequest>) -> Result<Response<PingReply>, Status> {
        Ok(Response::new(PingReply {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
        }))
    }
}

/// Serves the agent on a unix socket until `shutdown` resolves. A stale socket file is
/// replaced; the socket is made reachable by any user that can reach its directory (the
/// host side may be another user than the container's).
pub async fn serve(
    agent: Agent,
    socket: PathBuf,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_file(&socket);
    let listener = tokio::net::UnixListener::bind(&socket)
        .with_context(|| format!("cannot listen on {}", socket.display()))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666))
        .with_context(|| format!("cannot open up {}", socket.display()))?;
    tracing::info!(socket = %socket.display(), "serving");
    let service = agent.service();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: pass, and keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        tokio::spawn(serve_connection(service.clone(), stream));
    }
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

/// Serves the agent on one connection until it ends: one a unix socket accepted, or the
/// tunnel the agent dialled out (see [`crate::dial`]).
pub async fn serve_connection<S>(service: StepRunnerServer<Service>, stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(service);
    let served = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .await;
    if let Err(e) = served {
        tracing::debug!(error = %e, "connection ended");
    }
}
