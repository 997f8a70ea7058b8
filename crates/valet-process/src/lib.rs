//! `valet-process`: how valet runs one step as host processes, whatever carries the request.
//!
//! The agent's gRPC server (inside every container) and the local backend (on the host) run
//! steps the same way, so they share this one runner:
//!
//! * every step is a process group of its own, so a cancel reaches what the step started in
//!   the background too: TERM to the group, a grace period, then KILL;
//! * every process can carry [`Marks`], environment variables its descendants inherit, so
//!   the ones that leave the group (`setsid`, a daemon) are still found through `/proc` and
//!   ended with the step or the pod;
//! * stdout and stderr stream into a bounded channel (a slow reader holds the process back
//!   instead of memory growing), optionally cut at a cap, with what was dropped counted;
//! * a step may run as another user (`uid[:gid]`);
//! * exactly one party calls `waitpid` for a child: either the process's [`Reaper`] (the
//!   agent, PID 1 or a child subreaper, reaps everything) or, for a library inside a bigger
//!   process (the local backend inside `valet`), tokio for the runner's own children while
//!   the runner reaps only the orphans of its steps that were handed to it
//!   ([`become_subreaper`]), never a child some other part of the program waits for.
//!
//! And for the process running steps: keeping its own credentials from them ([`protect`]:
//! `VALET_SECRET_*` taken out of its environment at start, the process non-dumpable).
//!
//! Not here: any transport (gRPC, the backend traits); those wrap a [`Process`].

pub mod marks;
pub mod protect;
pub mod reaper;

mod adopted;
mod group;
mod output;

use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use nix::sys::signal::Signal;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

pub use group::{group_alive, group_running};
pub use marks::Marks;
pub use reaper::{Exit, Reaper, become_subreaper};

/// After the main process ended: how long to keep reading pipes still held by processes it
/// left running (a step that started something in the background), and (nothing left) how
/// long to wait for the last bytes.
const DRAIN_WITH_STRAGGLERS: Duration = Duration::from_millis(250);
const DRAIN: Duration = Duration::from_secs(5);
/// How long the pipes of a step that ended may take to close before valet looks for
/// processes that keep them open.
const SETTLE: Duration = Duration::from_millis(20);
/// After a cancel ended the processes: how long to wait for output still in the pipes.
const DRAIN_AFTER_CANCEL: Duration = Duration::from_millis(100);
/// After KILL, how long to wait for the processes to disappear before giving up on them.
const AFTER_KILL: Duration = Duration::from_secs(2);
/// How often a cancel looks whether everything ended.
const POLL: Duration = Duration::from_millis(10);

/// Which pipe a piece of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    /// The program and its arguments.
    pub argv: Vec<String>,
    /// Environment variables set for the process (after `clear_env`, before `marks`).
    pub env: Vec<(String, String)>,
    /// Start from an empty environment instead of this process's.
    pub clear_env: bool,
    /// The working directory; this process's when `None`.
    pub cwd: Option<PathBuf>,
    /// `uid` or `uid:gid`; asking for this process's own user changes nothing.
    pub user: Option<String>,
    /// Written to the process's stdin, which is then closed; stdin is `/dev/null` when `None`.
    pub stdin: Option<Vec<u8>>,
    /// Bytes of stdout and stderr together passed on; the rest is read and dropped.
    pub output_cap: Option<u64>,
    /// Set in the environment last, so a step cannot override them by its own variables.
    pub marks: Marks,
}

impl Spec {
    pub fn new<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Spec {
            argv: argv.into_iter().map(Into::into).collect(),
            ..Spec::default()
        }
    }
}

/// Why a process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("empty command")]
    Empty,
    #[error("bad user {0:?}: want uid[:gid]")]
    BadUser(String),
    #[error("the directory {} does not exist", .0.display())]
    NoDirectory(PathBuf),
    #[error("`{0}` not found")]
    NotFound(String),
    #[error("cannot start `{program}`: {source}")]
    PermissionDenied {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start `{program}`: {source}")]
    Io {
        program: String,
        #[source]
        source: std::io::Error,
    },
}

/// How the processes of a step ended, as far as output goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    /// How the main process ended.
    pub exit: Exit,
    /// Output bytes dropped past the cap.
    pub dropped: u64,
    /// The stream on which the cap was reached, if it was.
    pub cut_on: Option<Stream>,
}

/// Who waits for the runner's children.
#[derive(Clone)]
enum Reaping {
    /// The process's own reap loop reaps every child (the agent).
    Reaper(Reaper),
    /// The runner waits for its own children and reaps its steps' orphans.
    Own,
}

/// Starts processes; cheap to clone.
#[derive(Clone)]
pub struct Runner {
    reaping: Reaping,
}

impl Runner {
    /// For a process whose `reaper` reaps every child it has ([`Reaper::run`]): PID 1 of a
    /// container, or a child subreaper that owns all its children.
    pub fn with_reaper(reaper: Reaper) -> Self {
        Runner {
            reaping: Reaping::Reaper(reaper),
        }
    }

    /// For a library inside a program that starts other children too: the runner waits
    /// for the processes it starts, and reaps the orphans of their process groups or of
    /// their own sessions that are handed to this process (see [`become_subreaper`]); any
    /// other child is left to whoever started it.
    pub fn own_children() -> Self {
        Runner {
            reaping: Reaping::Own,
        }
    }

    /// Starts `spec` as a process group of its own. Needs a tokio runtime. Its output is
    /// held in the pipes until [`Process::stream`].
    pub fn spawn(&self, spec: Spec) -> Result<Process, SpawnError> {
        let Some((program, args)) = spec.argv.split_first() else {
            return Err(SpawnError::Empty);
        };
        let mut cmd = std::process::Command::new(program);
        cmd.args(args);
        if spec.clear_env {
            cmd.env_clear();
        }
        cmd.envs(spec.env.iter().map(|(k, v)| (k, v)))
            .envs(spec.marks.pairs())
            .process_group(0)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .stdin(if spec.stdin.is_some() {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::null()
            });
        if let Some(cwd) = &spec.cwd {
            cmd.current_dir(cwd);
        }
        if let Some(user) = &spec.user {
            let (uid, gid) = parse_user(user).ok_or_else(|| SpawnError::BadUser(user.clone()))?;
            // Switching users needs root; asking for this process's own user is a no-op.
            if uid != nix::unistd::geteuid().as_raw()
                || gid.is_some_and(|g| g != nix::unistd::getegid().as_raw())
            {
                cmd.uid(uid);
                if let Some(g) = gid {
                    cmd.gid(g);
                }
            }
        }
        let started = match &self.reaping {
            Reaping::Reaper(reaper) => reaper.spawn(&mut cmd).map(|(mut child, exit)| Started {
                pid: child.id(),
                stdin: child.stdin.take().map(OwnedFd::from),
                stdout: child.stdout.take().map(OwnedFd::from),
                stderr: child.stderr.take().map(OwnedFd::from),
                exit,
            }),
            Reaping::Own => adopted::spawn(cmd),
        }
        .map_err(|e| spawn_error(program, spec.cwd.as_ref(), e))?;
        let (exit_tx, exit_rx) = watch::channel(None);
        let exit = started.exit;
        tokio::spawn(async move {
            // A reaper that went away without a status: the process is lost to us.
            let exit = exit.await.unwrap_or(Exit::Code(-1));
            let _ = exit_tx.send(Some(exit));
        });
        let control = Control {
            inner: Arc::new(ControlInner {
                pgid: started.pid as i32,
                exit: exit_rx,
                marks: spec.marks,
                own: matches!(self.reaping, Reaping::Own),
            }),
        };
        Ok(Process {
            pid: started.pid,
            control,
            stdin: started.stdin.zip(spec.stdin),
            stdout: started.stdout,
            stderr: started.stderr,
            pumps: Vec::new(),
            cap: Arc::new(output::Cap::new(spec.output_cap.unwrap_or(u64::MAX))),
            finished: None,
        })
    }
}

/// A process just started, whoever waits for it.
struct Started {
    pid: u32,
    stdin: Option<OwnedFd>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    exit: oneshot::Receiver<Exit>,
}

fn spawn_error(program: &str, cwd: Option<&PathBuf>, e: std::io::Error) -> SpawnError {
    match e.kind() {
        std::io::ErrorKind::NotFound if cwd.is_some_and(|d| !d.is_dir()) => {
            SpawnError::NoDirectory(cwd.cloned().unwrap_or_default())
        }
        std::io::ErrorKind::NotFound => SpawnError::NotFound(program.to_string()),
        std::io::ErrorKind::PermissionDenied => SpawnError::PermissionDenied {
            program: program.to_string(),
            source: e,
        },
        _ => SpawnError::Io {
            program: program.to_string(),
            source: e,
        },
    }
}

/// `uid` or `uid:gid`, numbers only (a container's user names are not known to the host).
pub fn parse_user(s: &str) -> Option<(u32, Option<u32>)> {
    match s.split_once(':') {
        Some((u, g)) => Some((u.parse().ok()?, Some(g.parse().ok()?))),
        None => Some((s.parse().ok()?, None)),
    }
}

/// A running step: its main process, its group, its marked descendants, its output.
///
/// Dropped before its main process ended, it kills all of them: nothing runs on behind a
/// handle nobody holds.
pub struct Process {
    pid: u32,
    control: Control,
    stdin: Option<(OwnedFd, Vec<u8>)>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    pumps: Vec<JoinHandle<()>>,
    cap: Arc<output::Cap>,
    finished: Option<Finished>,
}

impl Process {
    /// The main process's pid (also its process group's id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// A handle that signals and cancels the step from elsewhere (another request).
    pub fn control(&self) -> Control {
        self.control.clone()
    }

    /// Starts writing stdin and reading stdout and stderr into `tx`, each piece made an
    /// item by `wrap`. The pipes are read on when `tx` is closed (and the output dropped),
    /// so the processes never block on a full pipe because nobody listens. Once only.
    pub fn stream<T: Send + 'static>(&mut self, tx: mpsc::Sender<T>, wrap: fn(Stream, Bytes) -> T) {
        if let Some((fd, data)) = self.stdin.take() {
            tokio::spawn(output::write_stdin(fd, data));
        }
        for (fd, stream) in [
            (self.stdout.take(), Stream::Stdout),
            (self.stderr.take(), Stream::Stderr),
        ] {
            if let Some(fd) = fd {
                self.pumps.push(tokio::spawn(output::pump(
                    fd,
                    tx.clone(),
                    wrap,
                    self.cap.clone(),
                    stream,
                )));
            }
        }
    }

    /// Waits for the main process to end and for its output (for a bounded time when other
    /// processes of the step still hold the pipes). Cancel-safe: a dropped call loses
    /// nothing, the next one goes on.
    pub async fn wait(&mut self) -> Finished {
        if let Some(f) = self.finished {
            return f;
        }
        // Pipes nobody streams are closed, not read.
        self.stdin = None;
        self.stdout = None;
        self.stderr = None;
        let exit = self.control.exited().await;
        // Usually the pipes end with the main process: then no scan of `/proc` for
        // stragglers is needed, which would cost every step far more than the step itself.
        if !self.pumps.is_empty() && !self.settle(SETTLE).await {
            let limit = if self.control.stragglers() {
                DRAIN_WITH_STRAGGLERS
            } else {
                DRAIN
            };
            self.drain(limit).await;
        }
        if self.control.inner.own {
            adopted::reap_now_and_then();
        }
        let f = Finished {
            exit,
            dropped: self.cap.dropped(),
            cut_on: self.cap.cut_on(),
        };
        self.finished = Some(f);
        f
    }

    /// Ends the step: [`Control::cancel`], then what is left of the output, briefly.
    pub async fn cancel(&mut self, grace: Duration) -> Finished {
        self.control.cancel(grace).await;
        self.drain(DRAIN_AFTER_CANCEL).await;
        self.wait().await
    }

    /// Reads what is left in the pipes, for at most `limit`; then stops reading.
    /// Waits up to `limit` for every pipe to reach its end, giving up on none; whether
    /// they all did.
    async fn settle(&mut self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while let Some(p) = self.pumps.last_mut() {
            if tokio::time::timeout_at(deadline, &mut *p).await.is_err() {
                return false;
            }
            self.pumps.pop();
        }
        true
    }

    async fn drain(&mut self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while let Some(p) = self.pumps.last_mut() {
            if tokio::time::timeout_at(deadline, &mut *p).await.is_ok() {
                self.pumps.pop();
            } else {
                for p in self.pumps.drain(..) {
                    p.abort();
                }
            }
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        for p in self.pumps.drain(..) {
            p.abort();
        }
        if self.control.exit().is_none() {
            self.control.kill();
        }
    }
}

/// Signals and cancels one step; cheap to clone.
#[derive(Clone)]
pub struct Control {
    inner: Arc<ControlInner>,
}

struct ControlInner {
    pgid: i32,
    /// `Some` once the main process ended.
    exit: watch::Receiver<Option<Exit>>,
    marks: Marks,
    own: bool,
}

impl Control {
    /// The step's process group.
    pub fn pgid(&self) -> i32 {
        self.inner.pgid
    }

    /// How the main process ended, once it has.
    pub fn exit(&self) -> Option<Exit> {
        *self.inner.exit.borrow()
    }

    /// Waits for the main process to end.
    pub async fn exited(&self) -> Exit {
        let mut rx = self.inner.exit.clone();
        match rx.wait_for(Option::is_some).await {
            Ok(e) => e.unwrap_or(Exit::Code(-1)),
            // The watcher task is gone (the runtime is shutting down).
            Err(_) => self.exit().unwrap_or(Exit::Code(-1)),
        }
    }

    /// Whether processes of the step other than a main process that ended are still
    /// running: in its group, or (with marks) anywhere.
    pub fn stragglers(&self) -> bool {
        group_running(self.inner.pgid)
            || (!self.inner.marks.is_empty() && !self.inner.marks.find().is_empty())
    }

    /// Sends `sig` to the step's group and to every process carrying its marks.
    pub fn signal(&self, sig: Signal) {
        group::kill_group(self.inner.pgid, sig);
        if !self.inner.marks.is_empty() {
            self.inner.marks.signal(sig);
        }
    }

    /// KILL to everything of the step, at once.
    pub fn kill(&self) {
        self.signal(Signal::SIGKILL);
    }

    /// Ends everything of the step: TERM, up to `grace` for it to end, then KILL, and
    /// returns once the main process ended and nothing of the step runs any more (or, past
    /// KILL, after a bounded wait for processes that do not go away).
    pub async fn cancel(&self, grace: Duration) {
        let mut exit = self.inner.exit.clone();
        let done =
            |exit: &watch::Receiver<Option<Exit>>| exit.borrow().is_some() && !self.stragglers();
        if done(&exit) {
            return;
        }
        let span = tracing::info_span!("cancel", pgid = self.inner.pgid);
        async {
            self.signal(Signal::SIGTERM);
            let deadline = tokio::time::Instant::now() + grace;
            let mut killed = false;
            loop {
                if done(&exit) {
                    break;
                }
                let now = tokio::time::Instant::now();
                if !killed && now >= deadline {
                    tracing::info!("grace period over: KILL");
                    self.kill();
                    killed = true;
                }
                if killed && now >= deadline + AFTER_KILL {
                    tracing::warn!("processes of the step outlived KILL");
                    break;
                }
                if exit.borrow().is_some() {
                    tokio::time::sleep(POLL).await;
                } else {
                    // Wake early when the main process ends.
                    let _ = tokio::time::timeout(POLL, exit.changed()).await;
                }
            }
        }
        .instrument(span)
        .await;
        self.reap_orphans();
    }

    fn reap_orphans(&self) {
        if self.inner.own {
            adopted::reap();
        }
    }
}

/// Reaps the orphans of the runner's steps that were handed to this process and ended
/// (only for [`Runner::own_children`]; a [`Reaper`] reaps them itself). Cheap to call after
/// killing what a pod left.
pub fn reap_orphans() {
    adopted::reap();
}
