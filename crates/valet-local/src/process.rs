//! Host processes: spawn in a new process group, stream output, wait, kill the group.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use valet_backend::{BackendError, Execution, ExecutionHandle, ExitStatus, Output};

/// How long `wait` keeps reading output after the main process ended while other processes
/// of its group still hold the pipes (a step that left a background process behind).
const DRAIN_WITH_STRAGGLERS: Duration = Duration::from_millis(250);
/// How long `wait` keeps reading output after the main process ended and its group is empty.
const DRAIN: Duration = Duration::from_secs(5);
/// After KILL, how long to wait for the group to disappear before giving up on it.
const AFTER_KILL: Duration = Duration::from_secs(2);

pub(crate) fn spawn(
    program: &str,
    args: &[String],
    env: &BTreeMap<String, String>,
    cwd: &Path,
    stdin: Option<Vec<u8>>,
) -> Result<(Execution, i32), BackendError> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(env)
        .current_dir(cwd)
        .process_group(0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        });
    let mut child = cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound if !cwd.exists() => {
            BackendError::Rejected(format!("the directory {} does not exist", cwd.display()))
        }
        std::io::ErrorKind::NotFound => BackendError::Rejected(format!("`{program}` not found")),
        _ => BackendError::Internal(format!("cannot start `{program}`: {e}")),
    })?;
    let pgid = child
        .id()
        .map(|p| p as i32)
        .ok_or_else(|| BackendError::Internal("the process ended before it started".into()))?;
    let (tx, rx) = mpsc::channel(64);
    let mut pumps = Vec::with_capacity(2);
    if let Some(out) = child.stdout.take() {
        pumps.push(tokio::spawn(pump(out, tx.clone(), Output::Stdout)));
    }
    if let Some(err) = child.stderr.take() {
        pumps.push(tokio::spawn(pump(err, tx, Output::Stderr)));
    }
    if let (Some(data), Some(mut input)) = (stdin, child.stdin.take()) {
        tokio::spawn(async move {
            let _ = input.write_all(&data).await;
            let _ = input.shutdown().await;
        });
    }
    let handle = LocalHandle {
        child,
        pgid,
        pumps,
        status: None,
    };
    Ok((
        Execution {
            output: rx,
            handle: Box::new(handle),
        },
        pgid,
    ))
}

async fn pump<R: AsyncRead + Unpin>(mut r: R, tx: mpsc::Sender<Output>, wrap: fn(Bytes) -> Output) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut receiver_gone = false;
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                // Keep reading when nobody listens, so the process never blocks on a full pipe.
                if !receiver_gone
                    && tx
                        .send(wrap(Bytes::copy_from_slice(&buf[..n])))
                        .await
                        .is_err()
                {
                    receiver_gone = true;
                }
            }
        }
    }
}

/// Sends `sig` to every process of group `pgid`; a group already gone is not an error.
pub(crate) fn kill_group(pgid: i32, sig: Signal) {
    let _ = killpg(Pid::from_raw(pgid), sig);
}

/// Whether any process (zombies included) is still in group `pgid`.
pub(crate) fn group_alive(pgid: i32) -> bool {
    killpg(Pid::from_raw(pgid), None).is_ok()
}

/// Whether a live (not zombie) process is in group `pgid`. Zombies are not counted: an
/// orphan's zombie waits for whoever reaps orphans on this machine, which may be slow.
pub(crate) fn group_running(pgid: i32) -> bool {
    if !group_alive(pgid) {
        return false;
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return true;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{name}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid pgrp …`; comm may hold spaces and parentheses.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().unwrap_or("");
        let _ppid = fields.next();
        let pgrp: i32 = fields.next().and_then(|p| p.parse().ok()).unwrap_or(-1);
        if pgrp == pgid && state != "Z" && state != "X" {
            return true;
        }
    }
    false
}

struct LocalHandle {
    child: tokio::process::Child,
    pgid: i32,
    pumps: Vec<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

fn convert(st: std::process::ExitStatus) -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    match (st.code(), st.signal()) {
        (Some(c), _) => ExitStatus::Code(c),
        (None, Some(s)) => ExitStatus::Signal(s),
        (None, None) => ExitStatus::Code(-1),
    }
}

impl LocalHandle {
    async fn wait_main(&mut self) -> Result<ExitStatus, BackendError> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        let st = self
            .child
            .wait()
            .await
            .map_err(|e| BackendError::Internal(format!("cannot wait for the process: {e}")))?;
        let st = convert(st);
        self.status = Some(st);
        Ok(st)
    }

    /// Reads what is left in the pipes, for at most `limit`; then stops reading.
    async fn drain(&mut self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while let Some(p) = self.pumps.last_mut() {
            match tokio::time::timeout_at(deadline, &mut *p).await {
                Ok(_) => {
                    self.pumps.pop();
                }
                Err(_) => {
                    for p in self.pumps.drain(..) {
                        p.abort();
                    }
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl ExecutionHandle for LocalHandle {
    async fn wait(&mut self) -> Result<ExitStatus, BackendError> {
        let st = self.wait_main().await?;
        if !self.pumps.is_empty() {
            let limit = if group_alive(self.pgid) && group_running(self.pgid) {
                DRAIN_WITH_STRAGGLERS
            } else {
                DRAIN
            };
            self.drain(limit).await;
        }
        Ok(st)
    }

    async fn cancel(&mut self, grace: Duration) -> Result<ExitStatus, BackendError> {
        if self.status.is_none() || group_running(self.pgid) {
            kill_group(self.pgid, Signal::SIGTERM);
            let deadline = Instant::now() + grace;
            let mut killed = false;
            loop {
                if self.status.is_none() {
                    if let Ok(Ok(st)) =
                        tokio::time::timeout(Duration::from_millis(10), self.child.wait()).await
                    {
                        self.status = Some(convert(st));
                    }
                } else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                if self.status.is_some() && !group_running(self.pgid) {
                    break;
                }
                if !killed && Instant::now() >= deadline {
                    kill_group(self.pgid, Signal::SIGKILL);
                    killed = true;
                }
                if killed && Instant::now() >= deadline + AFTER_KILL {
                    break;
                }
            }
        }
        let st = self.wait_main().await?;
        self.drain(Duration::from_millis(100)).await;
        Ok(st)
    }
}

impl Drop for LocalHandle {
    fn drop(&mut self) {
        for p in self.pumps.drain(..) {
            p.abort();
        }
        // A handle dropped before its process ended leaves nothing running behind it.
        if self.status.is_none() {
            kill_group(self.pgid, Signal::SIGKILL);
        }
    }
}
