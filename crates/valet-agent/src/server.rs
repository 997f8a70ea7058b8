//! The agent's side of the protocol: runs commands as process groups, streams their output
//! with backpressure and a cap, cancels them, and runs the container's own command (a
//! sidecar) beside them.

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::proto::step_runner_server::{StepRunner, StepRunnerServer};
use crate::proto::{
    CancelReply, CancelRequest, Exited, PingReply, PingRequest, RunEvent, RunRequest, Started,
    exited, run_event,
};
use crate::reaper::{Exit, Reaper};

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
/// Bytes read from a pipe at a time (the size of one output event at most).
const CHUNK: usize = 32 * 1024;
/// After the main process ended: how long to keep reading pipes still held by processes it
/// left in the background, and (group empty) how long to wait for the last bytes.
const DRAIN_WITH_STRAGGLERS: Duration = Duration::from_millis(250);
const DRAIN: Duration = Duration::from_secs(5);
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
/// After KILL, how long to wait for a group to disappear.
const AFTER_KILL: Duration = Duration::from_secs(2);

/// An execution the agent is running.
struct Running {
    pgid: i32,
    /// `Some` once the main process ended.
    exit: watch::Receiver<Option<Exit>>,
}

/// The agent's state, shared by the gRPC service and the signal handling.
#[derive(Clone)]
pub struct Agent {
    reaper: Reaper,
    output_cap: u64,
    running: Arc<Mutex<HashMap<String, Running>>>,
    sidecar: Arc<Mutex<Option<i32>>>,
}

impl Agent {
    pub fn new(reaper: Reaper, output_cap: u64) -> Self {
        Agent {
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

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
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
        let groups: Vec<i32> = self.running().values().map(|r| r.pgid).collect();
        for g in &groups {
            let _ = killpg(Pid::from_raw(*g), sig);
        }
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let sidecar_alive = self
                .sidecar
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some();
            let groups_alive = groups.iter().any(|g| group_alive(*g));
            if (!sidecar_alive && !groups_alive) || tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn spawn_step(
        &self,
        req: RunRequest,
        stdin: bool,
    ) -> Result<(std::process::Child, tokio::sync::oneshot::Receiver<Exit>), Status> {
        let Some((program, args)) = req.argv.split_first() else {
            return Err(Status::invalid_argument("empty command"));
        };
        let mut cmd = std::process::Command::new(program);
        cmd.args(args)
            .envs(&req.env)
            .process_group(0)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .stdin(if stdin {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::null()
            });
        if !req.cwd.is_empty() {
            cmd.current_dir(&req.cwd);
        }
        if !req.user.is_empty() {
            let (uid, gid) = parse_user(&req.user).ok_or_else(|| {
                Status::invalid_argument(format!("bad user {:?}: want uid[:gid]", req.user))
            })?;
            // Switching users needs root; asking for the agent's own user is a no-op.
            if uid != nix::unistd::geteuid().as_raw()
                || gid.is_some_and(|g| g != nix::unistd::getegid().as_raw())
            {
                cmd.uid(uid);
                if let Some(g) = gid {
                    cmd.gid(g);
                }
            }
        }
        self.reaper.spawn(&mut cmd).map_err(|e| {
            let cwd_missing = !req.cwd.is_empty() && !std::path::Path::new(&req.cwd).is_dir();
            match e.kind() {
                std::io::ErrorKind::NotFound if cwd_missing => {
                    Status::failed_precondition(format!("the directory {} does not exist", req.cwd))
                }
                std::io::ErrorKind::NotFound => Status::not_found(format!("`{program}` not found")),
                std::io::ErrorKind::PermissionDenied => {
                    Status::permission_denied(format!("cannot start `{program}`: {e}"))
                }
                _ => Status::internal(format!("cannot start `{program}`: {e}")),
            }
        })
    }

    async fn cancel(&self, id: &str, grace: Duration) -> bool {
        let Some((pgid, mut exit)) = self.running().get(id).map(|r| (r.pgid, r.exit.clone()))
        else {
            return false;
        };
        let span = tracing::info_span!("cancel", execution = id, pgid);
        async move {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGTERM);
            let deadline = tokio::time::Instant::now() + grace.min(MAX_GRACE);
            let mut killed = false;
            loop {
                if exit.borrow().is_some() && !group_alive(pgid) {
                    break;
                }
                let now = tokio::time::Instant::now();
                if !killed && now >= deadline {
                    tracing::info!("grace period over: KILL");
                    let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
                    killed = true;
                }
                if killed && now >= deadline + AFTER_KILL {
                    tracing::warn!("the process group outlived KILL");
                    break;
                }
                let step = Duration::from_millis(10);
                // Wake early when the main process ends.
                let _ = tokio::time::timeout(step, exit.changed()).await;
            }
        }
        .instrument(span)
        .await;
        true
    }
}

/// Whether any process (zombies included) is left in group `pgid`. The agent reaps what it
/// inherits, so zombies do not linger.
fn group_alive(pgid: i32) -> bool {
    killpg(Pid::from_raw(pgid), None).is_ok()
}

fn parse_user(s: &str) -> Option<(u32, Option<u32>)> {
    match s.split_once(':') {
        Some((u, g)) => Some((u.parse().ok()?, Some(g.parse().ok()?))),
        None => Some((s.parse().ok()?, None)),
    }
}

/// Output accounting shared by the stdout and stderr readers of one step.
struct Cap {
    limit: u64,
    used: AtomicU64,
    dropped: AtomicU64,
    /// The stream (1 stdout, 2 stderr) on which the cap was reached; 0 before.
    cut_on: AtomicU8,
}

impl Cap {
    fn new(limit: u64) -> Self {
        Cap {
            limit,
            used: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            cut_on: AtomicU8::new(0),
        }
    }

    /// How many of `n` new bytes of stream `stream` may still be sent.
    fn take(&self, stream: u8, n: u64) -> u64 {
        let before = self.used.fetch_add(n, Ordering::Relaxed);
        let allowed = self.limit.saturating_sub(before).min(n);
        if allowed < n {
            self.dropped.fetch_add(n - allowed, Ordering::Relaxed);
            let _ = self
                .cut_on
                .compare_exchange(0, stream, Ordering::Relaxed, Ordering::Relaxed);
        }
        allowed
    }
}

/// Reads one pipe to its end, sending at most what the cap allows; keeps reading (and
/// dropping) past the cap and after the caller went away, so the process never blocks on a
/// full pipe for those reasons.
async fn pump(
    fd: std::os::fd::OwnedFd,
    tx: mpsc::Sender<Result<RunEvent, Status>>,
    cap: Arc<Cap>,
    stream: u8,
) {
    let Ok(mut pipe) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) else {
        return;
    };
    let mut buf = vec![0u8; CHUNK];
    let mut caller_gone = false;
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let allowed = cap.take(stream, n as u64) as usize;
        if allowed == 0 || caller_gone {
            continue;
        }
        let data = buf[..allowed].to_vec();
        let event = RunEvent {
            event: Some(if stream == STDERR {
                run_event::Event::Stderr(data)
            } else {
                run_event::Event::Stdout(data)
            }),
        };
        if tx.send(Ok(event)).await.is_err() {
            caller_gone = true;
        }
    }
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
        let (mut child, exit_rx) = agent.spawn_step(req, stdin.is_some())?;
        let pid = child.id();
        let pgid = pid as i32;
        tracing::debug!(pid, "started");
        let (exit_tx, exit_watch) = watch::channel(None);
        agent.running().insert(
            id.clone(),
            Running {
                pgid,
                exit: exit_watch,
            },
        );

        let (tx, rx) = mpsc::channel(EVENTS);
        // The channel is empty: the first event always fits.
        let _ = tx.try_send(Ok(RunEvent {
            event: Some(run_event::Event::Started(Started { pid })),
        }));
        if let (Some(data), Some(input)) = (stdin, child.stdin.take()) {
            tokio::spawn(async move {
                match tokio::net::unix::pipe::Sender::from_owned_fd(input.into()) {
                    Ok(mut pipe) => {
                        if let Err(e) = pipe.write_all(&data).await {
                            tracing::debug!(error = %e, "stdin not fully written");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot write stdin"),
                }
            });
        }
        let cap = Arc::new(Cap::new(limit));
        let mut pumps = Vec::with_capacity(2);
        if let Some(out) = child.stdout.take() {
            pumps.push(tokio::spawn(pump(
                out.into(),
                tx.clone(),
                cap.clone(),
                STDOUT,
            )));
        }
        if let Some(err) = child.stderr.take() {
            pumps.push(tokio::spawn(pump(
                err.into(),
                tx.clone(),
                cap.clone(),
                STDERR,
            )));
        }
        let running = agent.running.clone();
        tokio::spawn(
            async move {
                let exit = tokio::select! {
                    exit = exit_rx => exit.ok(),
                    _ = tx.closed() => {
                        // The caller went away before the end: leave nothing running.
                        tracing::info!("the caller went away: KILL to the group");
                        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
                        None
                    }
                };
                let _ = exit_tx.send(exit);
                // Output the main process wrote is in the pipes; background processes it
                // left may hold them open, so the wait for the end of output is bounded.
                let drain = if group_alive(pgid) { DRAIN_WITH_STRAGGLERS } else { DRAIN };
                let deadline = tokio::time::Instant::now() + drain;
                for p in &mut pumps {
                    if tokio::time::timeout_at(deadline, &mut *p).await.is_err() {
                        p.abort();
                    }
                }
                let dropped = cap.dropped.load(Ordering::Relaxed);
                if dropped > 0 {
                    let marker = format!(
                        "\n[valet-agent: output cut here at the cap of {}; {dropped} more bytes dropped]\n",
                        crate::human_bytes(cap.limit)
                    )
                    .into_bytes();
                    let event = if cap.cut_on.load(Ordering::Relaxed) == STDERR {
                        run_event::Event::Stderr(marker)
                    } else {
                        run_event::Event::Stdout(marker)
                    };
                    let _ = tx.send(Ok(RunEvent { event: Some(event) })).await;
                }
                running.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                if let Some(exit) = exit {
                    tracing::debug!(%exit, dropped, "exited");
                    let status = match exit {
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
